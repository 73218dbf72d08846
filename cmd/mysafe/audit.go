package main

// Audit and compliance tools: `mysafe export`, `mysafe audit verify`, the
// SIEM relay that serve runs, and a hidden generator of large logs for
// measurements. Offline (--data-dir) they read the embedded store while
// the server is stopped; online (--target, --token) they ask a running
// server through the API.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	nethttp "net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mysafe/mysafe/eventstore"
	"github.com/mysafe/mysafe/eventstore/auditlog"
	"github.com/mysafe/mysafe/eventstore/bolt"
	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/projections"
)

// startRelay runs the SIEM relay (projections.Relay) until stop is called.
func startRelay(ctx context.Context, cfg serveConfig, store eventstore.Store, own *redis.Client, logger *slog.Logger) (stop func(), err error) {
	// own is the relay's client alone: watermill's publisher closes the
	// client it is given.
	relay, err := projections.NewRelay(projections.RelayConfig{Store: store, Redis: own, Prefix: cfg.redisPrefix,
		Stream: cfg.auditStream, Logger: logger})
	if err != nil {
		own.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- relay.Run(runCtx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			logger.Error("SIEM relay stopped", "err", err)
		}
	}, nil
}

// source is where an audit tool reads: a data dir, or a running server.
type source struct {
	dataDir string
	target  string
	token   string
}

func (s *source) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.dataDir, "data-dir", "", "data dir of a stopped server: read its event log directly")
	f.StringVar(&s.target, "target", "", "URL of a running server, e.g. http://127.0.0.1:8080, to ask through its API")
	f.StringVar(&s.token, "token", envOr("MYSAFE_TOKEN", ""), "bearer token of an admin or auditor, with --target (env MYSAFE_TOKEN)")
	cmd.MarkFlagsMutuallyExclusive("data-dir", "target")
	cmd.MarkFlagsOneRequired("data-dir", "target")
}

// openLog opens the embedded log of a data dir that a server is not using.
func (s *source) openLog() (eventstore.Store, error) {
	path := filepath.Join(s.dataDir, "events.db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--data-dir %s: no event log there: %w", s.dataDir, err)
	}
	store, err := bolt.Open(path, bolt.WithOpenTimeout(2*time.Second))
	if err != nil {
		return nil, fmt.Errorf("%w (is a server running on this data dir? stop it, or use --target and --token)", err)
	}
	return store, nil
}

// get asks the running server; the caller closes the body.
func (s *source) get(ctx context.Context, path string, query url.Values) (*nethttp.Response, error) {
	if s.token == "" {
		return nil, errors.New("--target needs --token (or MYSAFE_TOKEN): an admin's or auditor's bearer token")
	}
	req, err := nethttp.NewRequestWithContext(ctx, "GET", strings.TrimRight(s.target, "/")+path+"?"+query.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != nethttp.StatusOK {
		defer resp.Body.Close()
		var p api.Problem
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			return nil, fmt.Errorf("%s: %d %s", path, resp.StatusCode, p.Detail)
		}
		return nil, fmt.Errorf("%s: %s", path, resp.Status)
	}
	return resp, nil
}

// bar shows progress through the log on a terminal: events done, rate and
// ETA. Rate and ETA are in log positions, which on the embedded store are
// events. Off a terminal (piped, redirected, CI) it shows nothing.
type bar struct {
	pb *progressbar.ProgressBar
}

func newBar(what string, head eventstore.Position) *bar {
	if !term.IsTerminal(int(os.Stderr.Fd())) || head.Commit == 0 {
		return &bar{}
	}
	return &bar{pb: progressbar.NewOptions64(int64(head.Commit),
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetWidth(30),
	)}
}

func (b *bar) update(done uint64, pos eventstore.Position) {
	if b.pb != nil {
		b.pb.Describe(strconv.FormatUint(done, 10) + " written")
		_ = b.pb.Set64(int64(min(pos.Commit, uint64(b.pb.GetMax64()))))
	}
}

func (b *bar) finish() {
	if b.pb != nil {
		_ = b.pb.Finish()
		fmt.Fprintln(os.Stderr)
	}
}

// outFile writes to a temporary file beside path and renames it into place
// only once complete, so that a failed export leaves no partial file that
// looks whole. Path "-" is standard output.
type outFile struct {
	path string
	f    *os.File
}

func createOut(path string) (*outFile, error) {
	if path == "-" {
		return &outFile{path: path, f: os.Stdout}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".mysafe-export-*")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &outFile{path: path, f: f}, nil
}

func (o *outFile) commit() error {
	if o.path == "-" {
		return nil
	}
	if err := o.f.Sync(); err != nil {
		return o.abort(err)
	}
	if err := o.f.Close(); err != nil {
		return o.abort(err)
	}
	return os.Rename(o.f.Name(), o.path)
}

func (o *outFile) abort(err error) error {
	if o.path != "-" {
		o.f.Close()
		os.Remove(o.f.Name())
	}
	return err
}

func exportCommand() *cobra.Command {
	var (
		src        source
		format     string
		from, to   string
		types      []string
		out        string
		filter     auditlog.Filter
		exportForm auditlog.Format
	)
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export the audit log as CSV or NDJSON, without any secret value",
		Long: `Export every event of the log (or those the filters keep) as CSV (RFC 4180, with a
header row, cells that a spreadsheet would run as formulas neutralised with a leading ')
or NDJSON (one JSON object a line), each with its chain hash, never a secret value.
Reads the data dir of a stopped server (--data-dir) or asks a running one (--target, --token).
Shows a progress bar on a terminal.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			var err error
			if exportForm, err = auditlog.ParseFormat(format); err != nil {
				return fmt.Errorf("--format: %w", err)
			}
			for _, t := range []struct {
				name, raw string
				to        *time.Time
			}{{"--from", from, &filter.From}, {"--to", to, &filter.To}} {
				if t.raw == "" {
					continue
				}
				if *t.to, err = time.Parse(time.RFC3339Nano, t.raw); err != nil {
					return fmt.Errorf("%s %q: want an RFC 3339 time such as 2026-03-03T14:00:00Z", t.name, t.raw)
				}
			}
			filter.Types = types
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			o, err := createOut(out)
			if err != nil {
				return err
			}
			var n uint64
			if src.target != "" {
				n, err = exportOnline(ctx, &src, o.f, exportForm, from, to, types)
			} else {
				n, err = exportOffline(ctx, &src, o.f, exportForm, filter)
			}
			if err != nil {
				return o.abort(err)
			}
			if err := o.commit(); err != nil {
				return err
			}
			if out != "-" {
				fmt.Fprintf(cmd.ErrOrStderr(), "exported %d events to %s\n", n, out)
			}
			return nil
		},
	}
	src.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&format, "format", "csv", "csv or ndjson")
	f.StringVar(&from, "from", "", "only events at or after this RFC 3339 time")
	f.StringVar(&to, "to", "", "only events at or before this RFC 3339 time")
	f.StringSliceVar(&types, "type", nil, "only events of these types (repeat or separate with commas), e.g. ShareGranted")
	f.StringVar(&out, "out", "", "file to write; - for standard output")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func exportOffline(ctx context.Context, src *source, w io.Writer, format auditlog.Format, filter auditlog.Filter) (uint64, error) {
	store, err := src.openLog()
	if err != nil {
		return 0, err
	}
	defer store.Close()
	head, err := auditlog.Head(ctx, store)
	if err != nil {
		return 0, err
	}
	b := newBar("exporting", head)
	defer b.finish()
	return auditlog.Export(ctx, store, w, format, filter, b.update, nil)
}

func exportOnline(ctx context.Context, src *source, w io.Writer, format auditlog.Format, from, to string, types []string) (uint64, error) {
	q := url.Values{"format": {string(format)}}
	if from != "" {
		q.Set("from", from)
	}
	if to != "" {
		q.Set("to", to)
	}
	if len(types) > 0 {
		q.Set("type", strings.Join(types, ","))
	}
	resp, err := src.get(ctx, "/api/v1/audit/export", q)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	head, _ := eventstore.ParsePosition(resp.Header.Get(api.LogHeadHeader))
	b := newBar("exporting", head)
	defer b.finish()
	lw := &lineProgress{format: format, bar: b}
	if _, err := io.Copy(io.MultiWriter(w, lw), resp.Body); err != nil {
		return 0, fmt.Errorf("export cut short: %w", err)
	}
	n, err := strconv.ParseUint(resp.Trailer.Get(api.ExportEventsTrailer), 10, 64)
	if err != nil {
		return 0, errors.New("export cut short: the server did not confirm its end; see its log")
	}
	return n, nil
}

// lineProgress follows an export as it downloads: each line begins with
// the event's position (the first CSV column, the first NDJSON member).
type lineProgress struct {
	format  auditlog.Format
	bar     *bar
	partial []byte
	n       uint64
}

func (l *lineProgress) Write(p []byte) (int, error) {
	data := append(l.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		l.line(data[:i])
		data = data[i+1:]
	}
	if len(data) > 256 { // only a line's start matters
		data = data[:256]
	}
	l.partial = append(l.partial[:0], data...)
	return len(p), nil
}

func (l *lineProgress) line(line []byte) {
	var raw []byte
	if l.format == auditlog.NDJSON {
		rest, ok := bytes.CutPrefix(line, []byte(`{"position":"`))
		if !ok {
			return
		}
		raw, _, _ = bytes.Cut(rest, []byte(`"`))
	} else {
		raw, _, _ = bytes.Cut(line, []byte(","))
	}
	if pos, err := eventstore.ParsePosition(string(raw)); err == nil {
		l.n++
		l.bar.update(l.n, pos)
	}
}

func auditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Audit tools: verify the log's hash chains",
	}
	cmd.AddCommand(verifyCommand(), generateCommand())
	return cmd
}

func verifyCommand() *cobra.Command {
	var (
		src    source
		stream string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the log's hash chains and name the first event that does not match",
		Long: `Recompute the hash chain of every stream (or of --stream) and name the first event whose
hash does not match its content and the hash before it. Exits with status 1 if a chain is broken.
Reads the data dir of a stopped server (--data-dir) or asks a running one (--target, --token).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := verify(cmd.Context(), &src, stream)
			if err != nil {
				return err
			}
			what := "the log"
			if stream != "" {
				what = "stream " + stream
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d events checked, %d hashed, %d written before the hash chain existed\n",
				what, rep.Events, rep.Hashed, rep.Unhashed)
			if !rep.OK {
				b := rep.Broken
				return fmt.Errorf("chain broken at stream %s revision %d (event %s, position %s): %s", b.Stream, b.Revision, b.EventID, b.Position, b.Reason)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "OK: every hash matches")
			return nil
		},
	}
	src.flags(cmd)
	cmd.Flags().StringVar(&stream, "stream", "", "verify this stream only, e.g. secret-<id>")
	return cmd
}

func verify(ctx context.Context, src *source, stream string) (auditlog.Report, error) {
	if src.target != "" {
		q := url.Values{}
		if stream != "" {
			q.Set("stream", stream)
		}
		resp, err := src.get(ctx, "/api/v1/audit/verify", q)
		if err != nil {
			return auditlog.Report{}, err
		}
		defer resp.Body.Close()
		var rep auditlog.Report
		err = json.NewDecoder(resp.Body).Decode(&rep)
		return rep, err
	}
	store, err := src.openLog()
	if err != nil {
		return auditlog.Report{}, err
	}
	defer store.Close()
	head, err := auditlog.Head(ctx, store)
	if err != nil {
		return auditlog.Report{}, err
	}
	b := newBar("verifying", head)
	defer b.finish()
	return auditlog.Verify(ctx, store, stream, b.update)
}

// generateCommand fills a data dir with synthetic events, to measure
// exports and verification on a large log. Hidden: not for production.
func generateCommand() *cobra.Command {
	var (
		dataDir   string
		n, stream int
	)
	cmd := &cobra.Command{
		Use:    "generate",
		Short:  "Append synthetic audit events to a data dir's log (for measurements)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ensureDataDir(dataDir); err != nil {
				return err
			}
			store, err := bolt.Open(filepath.Join(dataDir, "events.db"))
			if err != nil {
				return err
			}
			defer store.Close()
			start := time.Now()
			if err := auditlog.Generate(cmd.Context(), store, n, stream, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "appended %d events in %s\n", n, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "data dir whose log gets the events")
	f.IntVar(&n, "events", 1_000_000, "how many events")
	f.IntVar(&stream, "per-stream", 1000, "events per secret stream")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}
