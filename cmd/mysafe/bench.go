package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/mysafe/mysafe/cmd/mysafe/internal/bench"
	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/bolt"
	api "github.com/mysafe/mysafe/http"
)

// benchOptions are the flags of `mysafe bench`.
type benchOptions struct {
	cfg        bench.Config
	scenarios  string
	redisURL   string
	target     string
	tokens     []string
	jsonFile   string
	serviceLog string
	cpuProfile string
	memProfile string
}

func benchCommand() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure commands/s, read-model lag, query and rebuild speed, each beside what the machine allows",
		Long: `Starts mysafe in this process on a temporary data dir (embedded store, fsync on;
the Redis at --redis-url under a key prefix of its own, else an in-process one),
or targets a running one (--target URL --token T --token T2), seeds users and
secrets through the API, and runs each scenario for --duration with --clients
concurrent clients over loopback HTTP:

  commands  share dialog clicks (PUT /secrets/{id}/shares), sharing and unsharing
  lag       at --lag-rate commands/s (open loop): command answered → report shows it
  queries   report page (30 rows), details, home cards
  rebuild   a second projector replays the log into an empty prefix
  memory    (only when named) fill the log to --memory-secrets and --memory-events,
            restart the service as a process of its own and sample its RSS

In the same run it measures baselines with the same client library and
concurrency — raw fsync'd appends to the embedded store through its group
commit, Redis round trips and pipelined writes — and prints each figure
beside its baseline as a ratio, and against the targets of a 2-core machine.
It deletes its Redis keys and its data dir when done.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.cfg.Scenarios = splitList(o.scenarios)
			return runBench(ctx, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.scenarios, "scenarios", strings.Join(bench.DefaultScenarios, ","), "scenarios to run, comma-separated, of: "+strings.Join(bench.Scenarios, ","))
	f.DurationVar(&o.cfg.Duration, "duration", 10*time.Second, "how long each timed scenario runs (each query kind runs this long)")
	f.DurationVar(&o.cfg.BaselineDuration, "baseline-duration", 5*time.Second, "how long each baseline runs")
	f.IntVar(&o.cfg.Clients, "clients", 64, "concurrent clients of the closed-loop scenarios and baselines")
	f.IntVar(&o.cfg.Users, "users", 50, "users to seed, each owning --secrets-per-user secrets; a fifth as many grantees (at least 2) are seeded beside them")
	f.IntVar(&o.cfg.SecretsPerUser, "secrets-per-user", 40, "secrets each seeded user owns")
	f.Float64Var(&o.cfg.LagRate, "lag-rate", 1000, "offered rate of the lag scenario, commands per second")
	f.IntVar(&o.cfg.RebuildEvents, "rebuild-events", 100000, "least number of events the rebuild replays; share clicks fill the log up to it")
	f.IntVar(&o.cfg.MemorySecrets, "memory-secrets", 100000, "memory scenario: secrets to create before measuring")
	f.IntVar(&o.cfg.MemoryEvents, "memory-events", 1000000, "memory scenario: events the log holds before measuring (share clicks fill it)")
	f.StringVar(&o.redisURL, "redis-url", envOr("MYSAFE_REDIS_URL", ""), "Redis for the read models and the Redis baselines, e.g. redis://127.0.0.1:6379; empty runs an in-process one (env MYSAFE_REDIS_URL)")
	f.StringVar(&o.target, "target", "", "URL of a running mysafe to measure instead of one started here (needs two or more --token)")
	f.StringArrayVar(&o.tokens, "token", nil, "with --target: a bearer token to act as; repeat it, the bench shares between these users")
	f.StringVar(&o.jsonFile, "json", "", "also write the report as JSON to this file (- for standard output)")
	f.StringVar(&o.serviceLog, "service-log", "", "where the service started here writes its JSON log (one line per request, as serve does); default a file in the temp dir, removed afterwards")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (bench clients and service) to this file; a %s in the name writes one per scenario, seeding left out")
	f.StringVar(&o.memProfile, "memprofile", "", "write a heap profile of this process at the end to this file")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runBench(ctx context.Context, o benchOptions, stdout, stderr io.Writer) (err error) {
	o.cfg.Progress = stderr
	if f, ok := stderr.(*os.File); ok {
		o.cfg.Terminal = isatty.IsTerminal(f.Fd())
	}
	dir, err := os.MkdirTemp("", "mysafe-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	prefix := "mysafebench:" + randomHex() + ":"

	var env bench.Env
	var stopService func() error
	if o.target != "" {
		env, err = targetEnv(ctx, o, dir, prefix)
	} else {
		env, stopService, err = startBenchService(ctx, o, dir, prefix)
	}
	if err != nil {
		return err
	}
	// Our keys go whatever happens, with a client of our own: the
	// service's closes with it.
	defer func() {
		if stopService != nil {
			if serr := stopService(); serr != nil && err == nil {
				err = fmt.Errorf("service: %w", serr)
			}
		}
		if derr := deleteBenchKeys(o.redisURL, prefix); derr != nil && err == nil {
			err = derr
		}
	}()

	if strings.Contains(o.cpuProfile, "%s") {
		o.cfg.Profile = func(scenario string) func() {
			return startCPUProfile(fmt.Sprintf(o.cpuProfile, scenario), stderr)
		}
	} else if o.cpuProfile != "" {
		defer startCPUProfile(o.cpuProfile, stderr)()
	}
	report, err := bench.Run(ctx, env, o.cfg)
	if report != nil {
		if o.target == "" {
			report.Notes = append(report.Notes, "the service, its projections and the bench clients share this process and its CPUs; every baseline runs the same way")
		}
		if werr := report.WriteTable(stdout); werr != nil && err == nil {
			err = werr
		}
		if werr := writeJSONReport(o.jsonFile, report, stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if o.memProfile != "" {
		runtime.GC()
		if werr := writeHeapProfile(o.memProfile); werr != nil && err == nil {
			err = werr
		}
	}
	if err == nil && report.Failed() {
		err = errors.New("bench: some requests failed; the figures above do not count them (see the errors listed)")
	}
	return err
}

// startBenchService runs serve in this process, on a data dir in dir and
// under the bench's Redis prefix, and returns what the bench may see of it.
func startBenchService(ctx context.Context, o benchOptions, dir, prefix string) (bench.Env, func() error, error) {
	logPath := o.serviceLog
	if logPath == "" {
		logPath = filepath.Join(dir, "service.log")
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return bench.Env{}, nil, err
	}
	logger := slog.New(slog.NewJSONHandler(logFile, nil))
	// The request log goes through slog's default, as in serve; the
	// previous default comes back when the service stops.
	previous := slog.Default()
	slog.SetDefault(logger)

	var (
		boltStore *bolt.Store
		counter   *bench.ConflictCounter
		rdb       redis.UniversalClient
		listening = make(chan string, 1)
	)
	dataDir := filepath.Join(dir, "data")
	cfg := serveConfig{
		addr: "127.0.0.1:0", dataDir: dataDir, redisURL: o.redisURL, redisPrefix: prefix, waitTimeout: 5 * time.Second,
		listening: func(addr string) { listening <- addr },
		logger:    logger,
		wrapStore: func(s eventstore.Store) eventstore.Store {
			boltStore, _ = s.(*bolt.Store)
			counter = &bench.ConflictCounter{Store: s}
			return counter
		},
		composed: func(_ eventstore.Store, r redis.UniversalClient) { rdb = r },
	}
	svcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- serve(svcCtx, cfg, io.Discard) }()
	var addr string
	select {
	case addr = <-listening:
	case err := <-done:
		cancel()
		slog.SetDefault(previous)
		logFile.Close()
		return bench.Env{}, nil, fmt.Errorf("start the service: %w", err)
	}
	var stopOnce sync.Once
	var stopErr error
	stopInProcess := func() error {
		stopOnce.Do(func() {
			cancel()
			stopErr = <-done
			slog.SetDefault(previous)
			logFile.Close()
		})
		return stopErr
	}
	var child *childService
	stop := func() error {
		err := stopInProcess()
		if child != nil {
			if cerr := child.stop(); cerr != nil && err == nil {
				err = cerr
			}
		}
		return err
	}
	signingKey, err := os.ReadFile(filepath.Join(dataDir, signingKeyFile))
	if err != nil {
		stop()
		return bench.Env{}, nil, err
	}
	env := bench.Env{
		URL: "http://" + addr,
		Mint: func(userID, name string) (string, error) {
			return api.IssueToken(signingKey, api.Identity{UserID: userID, Name: name, Role: api.RoleUser}, 12*time.Hour, time.Now())
		},
		Store:     counter,
		Conflicts: counter.Conflicts,
		Redis:     rdb,
		RedisKind: "in-process (miniredis)",
		Prefix:    prefix,
		Dir:       dir,
		StoreKind: "embedded bbolt, fsync, group commit",
	}
	if o.redisURL != "" {
		env.RedisKind = redactURL(o.redisURL)
	}
	env.Restart = func(ctx context.Context) (string, int, bool, error) {
		if err := stopInProcess(); err != nil {
			return "", 0, false, err
		}
		var err error
		child, err = startChildService(dataDir, o.redisURL, prefix+"memory:", filepath.Join(dir, "memory-service.log"))
		if err != nil {
			return "", 0, false, err
		}
		return child.url, child.cmd.Process.Pid, o.redisURL != "", nil
	}
	if boltStore != nil {
		env.StoreStats = func() (uint64, uint64) {
			st := boltStore.Stats()
			return st.Commits, st.Appends
		}
	}
	return env, stop, nil
}

// childService is `mysafe serve` run as a process of its own, so that its
// memory is its own.
type childService struct {
	cmd *exec.Cmd
	url string
	log *os.File
}

func startChildService(dataDir, redisURL, prefix, logPath string) (*childService, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close() // serve listens on it again at once; a race is unlikely on loopback
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "serve", "--data-dir", dataDir, "--addr", addr, "--redis-url", redisURL, "--redis-prefix", prefix)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s serve: %w", exe, err)
	}
	return &childService{cmd: cmd, url: "http://" + addr, log: logFile}, nil
}

// stop asks the process to shut down as serve does on SIGTERM, and kills it
// if it has not within a minute.
func (c *childService) stop() error {
	defer c.log.Close()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- c.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("mysafe serve (pid %d): %w; its log: %s", c.cmd.Process.Pid, err, c.log.Name())
		}
		return nil
	case <-time.After(time.Minute):
		_ = c.cmd.Process.Kill()
		<-exited
		return fmt.Errorf("mysafe serve (pid %d) did not stop within a minute of SIGTERM; killed", c.cmd.Process.Pid)
	}
}

// targetEnv measures a running mysafe: only its API, and the Redis at
// --redis-url for the baselines if given.
func targetEnv(ctx context.Context, o benchOptions, dir, prefix string) (bench.Env, error) {
	if len(o.tokens) < 2 {
		return bench.Env{}, errors.New("--target needs at least two --token values (users who share with each other)")
	}
	env := bench.Env{URL: o.target, Tokens: o.tokens, Prefix: prefix, Dir: dir, RedisKind: "not measured (no --redis-url)",
		StoreKind: "the target's (baseline: the embedded store on this machine's temp dir)"}
	if o.redisURL != "" {
		opts, err := redis.ParseURL(o.redisURL)
		if err != nil {
			return env, fmt.Errorf("--redis-url: %w", err)
		}
		rdb := redis.NewClient(opts)
		if err := rdb.Ping(ctx).Err(); err != nil {
			rdb.Close()
			return env, fmt.Errorf("redis at %s does not answer: %w", opts.Addr, err)
		}
		env.Redis, env.RedisKind = rdb, redactURL(o.redisURL)+" (baselines only)"
	}
	return env, nil
}

// deleteBenchKeys deletes every key under the bench's prefix in the Redis
// at url; the in-process Redis is gone with the service.
func deleteBenchKeys(url, prefix string) error {
	if url == "" {
		return nil
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := bench.DeletePrefix(ctx, rdb, prefix); err != nil {
		return fmt.Errorf("delete the bench's keys under %q: %w", prefix, err)
	}
	return nil
}

func writeJSONReport(path string, r *bench.Report, stdout io.Writer) error {
	switch path {
	case "":
		return nil
	case "-":
		return r.WriteJSON(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := r.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startCPUProfile profiles this process into path until the returned
// function is called; a failure is reported, not fatal.
func startCPUProfile(path string, stderr io.Writer) (stop func()) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench: no CPU profile:", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// redactURL hides a password in a Redis URL.
func redactURL(u string) string {
	opts, err := redis.ParseURL(u)
	if err != nil || opts.Password == "" {
		return u
	}
	return strings.Replace(u, opts.Password, "xxxxx", 1)
}

func randomHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
