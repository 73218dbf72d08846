package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/mysafe/mysafe/domain/secretbox"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
	"github.com/mysafe/mysafe/eventstore/esdb"
	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/projections"
)

// serveConfig is what serve runs with; every flag has a MYSAFE_* variable.
type serveConfig struct {
	addr          string
	dataDir       string
	redisURL      string
	redisPrefix   string
	eventstoreURL string
	waitTimeout   time.Duration
	proxies       []string
	auditStream   string // the SIEM feed's Redis Stream; "" is <prefix>audit

	// shares are the e-mail and external share flags (extshares.go).
	shares shareFlags

	// listening, when set, is told the address served; tests use it with
	// addr 127.0.0.1:0.
	listening func(addr string)

	// Hooks for the load tool (bench.go); nil in `mysafe serve`.
	// logger replaces the JSON logger on stderr (which serve also makes
	// slog's default); wrapStore wraps the event store the API and the
	// projections use; composed is told the store and Redis once open.
	logger    *slog.Logger
	wrapStore func(eventstore.Store) eventstore.Store
	composed  func(eventstore.Store, redis.UniversalClient)
}

func serveCommand() *cobra.Command {
	var cfg serveConfig
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the API, the projections and, by default, an embedded event store and Redis",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.addr, "addr", envOr("MYSAFE_ADDR", "127.0.0.1:8080"), "listen address (env MYSAFE_ADDR)")
	f.StringVar(&cfg.dataDir, "data-dir", envOr("MYSAFE_DATA_DIR", "./mysafe-data"), "data dir: event log, keys (env MYSAFE_DATA_DIR)")
	f.StringVar(&cfg.redisURL, "redis-url", envOr("MYSAFE_REDIS_URL", ""), "Redis for the read models, e.g. redis://127.0.0.1:6379/0; empty runs an in-process one rebuilt from the log at start (env MYSAFE_REDIS_URL)")
	f.StringVar(&cfg.redisPrefix, "redis-prefix", envOr("MYSAFE_REDIS_PREFIX", "mysafe:"), "prefix of every Redis key (env MYSAFE_REDIS_PREFIX)")
	f.StringVar(&cfg.eventstoreURL, "eventstore-url", envOr("MYSAFE_EVENTSTORE_URL", ""), "EventStoreDB connection string, e.g. esdb://host:2113?tls=false; empty uses the embedded store in the data dir (env MYSAFE_EVENTSTORE_URL)")
	f.StringSliceVar(&cfg.proxies, "trusted-proxies", nil, "addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client IP recorded in audit events; none by default")
	f.DurationVar(&cfg.waitTimeout, "wait-timeout", 5*time.Second, "how long a query waits for X-MySafe-Min-Position")
	cfg.shares.register(f)
	f.StringVar(&cfg.auditStream, "audit-stream", envOr("MYSAFE_AUDIT_STREAM", ""), "Redis Stream the SIEM feed publishes audit events to; empty means <redis-prefix>audit (env MYSAFE_AUDIT_STREAM)")
	return cmd
}

// serve runs until ctx ends, then shuts down in order: stop taking
// requests, finish those in flight, stop the projections, close the stores.
func serve(ctx context.Context, cfg serveConfig, stdout io.Writer) error {
	logger := cfg.logger
	if logger == nil {
		logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
		slog.SetDefault(logger)
	}
	if err := ensureDataDir(cfg.dataDir); err != nil {
		return err
	}
	master, err := masterKey(cfg.dataDir)
	if err != nil {
		return err
	}
	keys, err := secretbox.New(master)
	if err != nil {
		return err
	}
	signingKey, fresh, err := loadOrCreateKey(filepath.Join(cfg.dataDir, signingKeyFile))
	if err != nil {
		return err
	}

	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.wrapStore != nil {
		store = cfg.wrapStore(store)
	}
	defer store.Close()

	rdb, newRedisClient, closeRedis, err := openRedis(ctx, cfg.redisURL)
	if err != nil {
		return err
	}
	defer closeRedis()
	if cfg.composed != nil {
		cfg.composed(store, rdb)
	}

	projector := projections.New(store, rdb, cfg.redisPrefix, logger)
	projectorDone := make(chan error, 1)
	projectorCtx, stopProjector := context.WithCancel(context.WithoutCancel(ctx))
	go func() { projectorDone <- projector.Run(projectorCtx) }()
	defer func() {
		stopProjector()
		<-projectorDone
	}()
	stopRelay, err := startRelay(ctx, cfg, store, newRedisClient(), logger)
	if err != nil {
		return err
	}
	defer stopRelay()

	mailer, mailVia, err := cfg.shares.mailer(cfg.dataDir)
	if err != nil {
		return err
	}
	server := api.NewServer(api.Config{
		Mailer:         mailer,
		ExternalShares: cfg.shares.config(),
		Store:          store,
		Keys:           keys,
		SigningKey:     signingKey,
		ReadModels:     projections.NewReader(rdb, cfg.redisPrefix),
		Audit:          projections.NewAuditReader(rdb, cfg.redisPrefix),
		Progress:       projector,
		Ping:           func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		WaitTimeout:    cfg.waitTimeout,
		TrustedProxies: cfg.proxies,
	})
	listener, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	httpServer := &nethttp.Server{Handler: server, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(listener) }()
	logger.Info("serving", "addr", "http://"+listener.Addr().String(), "dataDir", cfg.dataDir, "mail", mailVia)
	schedulerCtx, stopScheduler := context.WithCancel(ctx)
	defer stopScheduler()
	go server.RunExternalShareExpiry(schedulerCtx, cfg.shares.check)
	if fresh {
		token, err := api.IssueToken(signingKey, api.Identity{UserID: "admin", Name: "Administrator", Role: api.RoleAdmin}, 24*time.Hour, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "New data dir %s. Admin token (valid 24 h, shown once; `mysafe token` makes more):\n%s\n", cfg.dataDir, token)
	}
	if cfg.listening != nil { // after the token: whoever waits for this sees all start-up output
		cfg.listening(listener.Addr().String())
	}

	select {
	case err := <-served:
		return err
	case err := <-projectorDone:
		projectorDone <- err // for the deferred wait
		return fmt.Errorf("projections stopped: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil && !errors.Is(err, nethttp.ErrServerClosed) {
		return err
	}
	return nil
}

// openStore opens EventStoreDB when a connection string is given, else the
// embedded store in the data dir.
func openStore(ctx context.Context, cfg serveConfig) (eventstore.Store, error) {
	if cfg.eventstoreURL != "" {
		return esdb.Open(ctx, cfg.eventstoreURL)
	}
	return bolt.Open(filepath.Join(cfg.dataDir, "events.db"))
}

// openRedis connects to the configured Redis, or starts an in-process one:
// the embedded default keeps read models in memory and rebuilds them from
// the log at every start. newClient makes further clients of the same Redis
// for parts that must own theirs.
func openRedis(ctx context.Context, url string) (rdb *redis.Client, newClient func() *redis.Client, closeAll func(), err error) {
	var opts *redis.Options
	stopEmbedded := func() {}
	if url == "" {
		mini := miniredis.NewMiniRedis()
		if err := mini.StartAddr("127.0.0.1:0"); err != nil {
			return nil, nil, nil, fmt.Errorf("embedded redis: %w", err)
		}
		opts, stopEmbedded = &redis.Options{Addr: mini.Addr()}, mini.Close
	} else if opts, err = redis.ParseURL(url); err != nil {
		return nil, nil, nil, fmt.Errorf("--redis-url: %w", err)
	}
	// A client takes its options over and writes to them, so each gets a
	// copy of the pristine ones.
	newClient = func() *redis.Client { o := *opts; return redis.NewClient(&o) }
	rdb = newClient()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		stopEmbedded()
		return nil, nil, nil, fmt.Errorf("redis at %s does not answer: %w", opts.Addr, err)
	}
	return rdb, newClient, func() { rdb.Close(); stopEmbedded() }, nil
}
