// Package bench is the load tool behind `mysafe bench`: it seeds a running
// mysafe with users and secrets through the HTTP API, drives each scenario
// (commands, lag, queries, rebuild) with a number of concurrent clients, and
// measures, in the same run and with the same client library and
// concurrency, what the machine itself allows (raw Redis round trips and
// pipelined writes, raw fsync'd appends to the embedded store), so that
// every figure stands beside its baseline as a ratio.
//
// The bench never asserts on timing; it reports. Errors (any answer but the
// expected one) are counted and must be zero for a figure to mean anything.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/eventstore"
)

// Scenario names.
const (
	ScenarioCommands = "commands"
	ScenarioLag      = "lag"
	ScenarioQueries  = "queries"
	ScenarioRebuild  = "rebuild"
	ScenarioMemory   = "memory"
)

// Scenarios lists every scenario in the order they run. Memory runs last:
// it stops the service the bench started and measures a new process.
var Scenarios = []string{ScenarioCommands, ScenarioLag, ScenarioQueries, ScenarioRebuild, ScenarioMemory}

// DefaultScenarios are those run when none are named: all but memory,
// which fills the log with a million events first.
var DefaultScenarios = []string{ScenarioCommands, ScenarioLag, ScenarioQueries, ScenarioRebuild}

// Config is what a bench run does.
type Config struct {
	Scenarios []string
	// Duration of each timed scenario (each query kind gets its own).
	Duration time.Duration
	// BaselineDuration of each baseline.
	BaselineDuration time.Duration
	// Clients is the number of concurrent clients of the closed-loop
	// scenarios and baselines.
	Clients int
	// Users and SecretsPerUser shape the seeded data: every user owns
	// SecretsPerUser secrets and is the grantee of another user's.
	Users, SecretsPerUser int
	// LagRate is the offered rate of the lag scenario, commands per second.
	LagRate float64
	// RebuildEvents is the least number of events the log holds when the
	// rebuild replays it; share toggles fill it up through the API.
	RebuildEvents int
	// MemorySecrets and MemoryEvents size the memory scenario's log.
	MemorySecrets, MemoryEvents int
	// Progress receives a line per step; on a terminal (Terminal), also a
	// redrawn progress line. Nil is silent.
	Progress io.Writer
	Terminal bool
	// Profile, when set, is called as each scenario starts (its name) and
	// the function it returns as it ends; the bench command uses it to
	// write a CPU profile per scenario.
	Profile func(scenario string) (stop func())
}

// Env is the mysafe under test and what the bench may touch beside its API.
type Env struct {
	// URL of the service, e.g. http://127.0.0.1:8080.
	URL string
	// Mint returns a bearer token for a user, when the bench runs the
	// service itself and holds its signing key.
	Mint func(userID, name string) (string, error)
	// Tokens are the users to act as when Mint is nil (--target).
	Tokens []string
	// Store is the service's event log, when it runs in this process; the
	// rebuild scenario replays it. StoreStats, when set, reports the
	// embedded store's commits and appends so far (group commit at work).
	Store      eventstore.Store
	StoreStats func() (commits, appends uint64)
	// Conflicts, when set, counts appends refused for a stale expected
	// revision so far: each is a command decided again.
	Conflicts func() uint64
	// Redis is the read models' Redis (or, with --target, one given for the
	// baselines); nil skips the Redis baselines. RedisKind describes it.
	Redis     redis.UniversalClient
	RedisKind string
	// Prefix is the key prefix the bench may write under in Redis; it
	// deletes its keys itself when done.
	Prefix string
	// Dir is a scratch directory on the service's disk, for the baseline
	// append store.
	Dir string
	// StoreKind describes the event store, e.g. "embedded bbolt (fsync)".
	StoreKind string
	// Restart, when set, stops the service the bench runs and starts it
	// again as a `mysafe serve` process of its own on the same data dir and
	// a fresh key prefix, so that it rebuilds the read models from the log;
	// the memory scenario measures that process. It returns the new URL,
	// the process ID, and whether the read models live outside it (a
	// Redis at --redis-url).
	Restart func(ctx context.Context) (url string, pid int, externalRedis bool, err error)
}

// Result is one measured figure: a scenario or a baseline.
type Result struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // "scenario" or "baseline"
	// Unit is what Rate counts: commands, requests, events, appends...
	Unit    string `json:"unit"`
	Clients int    `json:"clients,omitempty"`
	// OfferedRate is the open-loop rate offered, per second.
	OfferedRate float64 `json:"offeredPerSecond,omitempty"`
	Summary
	// ErrorSamples are the first errors seen.
	ErrorSamples []string `json:"errorSamples,omitempty"`
	// Extra are scenario-specific figures (conflicts retried, appends per
	// commit, ...).
	Extra map[string]float64 `json:"extra,omitempty"`
	// Baseline names the baseline result this one is compared with, and
	// the ratios: Rate/baseline Rate and P99/baseline P99.
	Baseline  string  `json:"baseline,omitempty"`
	RateRatio float64 `json:"rateRatio,omitempty"`
	P99Ratio  float64 `json:"p99Ratio,omitempty"`
	// Target is the target for this figure, and whether it was met.
	Target    string `json:"target,omitempty"`
	TargetMet *bool  `json:"targetMet,omitempty"`
	// Note explains how the figure was measured or why it was skipped.
	Note string `json:"note,omitempty"`
}

// Report is everything a run measured.
type Report struct {
	Started    time.Time  `json:"started"`
	Finished   time.Time  `json:"finished"`
	Machine    Machine    `json:"machine"`
	Service    string     `json:"service"`
	Redis      string     `json:"redis"`
	Store      string     `json:"store"`
	Clients    int        `json:"clients"`
	Duration   string     `json:"duration"`
	Seed       string     `json:"seed"`
	Results    []Result   `json:"results"`
	LoadBefore string     `json:"loadAverageBefore,omitempty"`
	LoadAfter  string     `json:"loadAverageAfter,omitempty"`
	Notes      []string   `json:"notes,omitempty"`
	Config     configJSON `json:"config"`
}

type configJSON struct {
	Scenarios        []string `json:"scenarios"`
	Duration         string   `json:"duration"`
	BaselineDuration string   `json:"baselineDuration"`
	Clients          int      `json:"clients"`
	Users            int      `json:"users"`
	SecretsPerUser   int      `json:"secretsPerUser"`
	LagRate          float64  `json:"lagRate"`
	RebuildEvents    int      `json:"rebuildEvents"`
	MemorySecrets    int      `json:"memorySecrets,omitempty"`
	MemoryEvents     int      `json:"memoryEvents,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"goVersion"`
	OS         string `json:"os"`
}

// Failed reports whether any figure counted errors.
func (r *Report) Failed() bool {
	return slices.ContainsFunc(r.Results, func(x Result) bool { return x.Errors > 0 })
}

// bencher is one run.
type bencher struct {
	cfg    Config
	env    Env
	c      *client
	p      *progress
	w      *world
	report *Report
	// toggles counts the share changes sent per secret: odd shares, even
	// unshares (see toggle).
	toggles []atomic.Uint64
}

// Run seeds the service, runs the scenarios and the baselines they are
// compared with, and returns the report. It fails only when the bench
// cannot run at all; errors inside a scenario are counted in its result.
func Run(ctx context.Context, env Env, cfg Config) (*Report, error) {
	for _, s := range cfg.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q; want some of %s", s, strings.Join(Scenarios, ","))
		}
	}
	if cfg.Clients < 1 || cfg.Users < 2 || cfg.SecretsPerUser < 1 || cfg.Duration <= 0 || cfg.LagRate <= 0 {
		return nil, errors.New("bench: clients ≥ 1, users ≥ 2, secrets per user ≥ 1, duration > 0 and lag rate > 0 are required")
	}
	if cfg.BaselineDuration <= 0 {
		cfg.BaselineDuration = cfg.Duration
	}
	b := &bencher{
		cfg: cfg, env: env,
		c: newClient(env.URL, cfg.Clients*2),
		p: &progress{w: cfg.Progress, terminal: cfg.Terminal},
	}
	defer func() { b.c.close() }() // the memory scenario replaces it
	host, _ := os.Hostname()
	b.report = &Report{
		Started:    time.Now().UTC(),
		Machine:    Machine{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH + " " + host},
		Service:    env.URL,
		Redis:      env.RedisKind,
		Store:      env.StoreKind,
		Clients:    cfg.Clients,
		Duration:   cfg.Duration.String(),
		LoadBefore: loadAverage(),
		Config: configJSON{Scenarios: cfg.Scenarios, Duration: cfg.Duration.String(), BaselineDuration: cfg.BaselineDuration.String(),
			Clients: cfg.Clients, Users: cfg.Users, SecretsPerUser: cfg.SecretsPerUser, LagRate: cfg.LagRate, RebuildEvents: cfg.RebuildEvents,
			MemorySecrets: cfg.MemorySecrets, MemoryEvents: cfg.MemoryEvents},
	}
	if err := b.seed(ctx); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	b.report.Seed = fmt.Sprintf("%d users, %d secrets (%d each)", len(b.w.users), len(b.w.secrets), len(b.w.secrets)/len(b.w.users))
	b.toggles = make([]atomic.Uint64, len(b.w.secrets))

	for _, s := range Scenarios {
		if !slices.Contains(cfg.Scenarios, s) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return b.report, err
		}
		var fillErr error
		if s == ScenarioRebuild {
			fillErr = b.fillLog(ctx) // before the profile: it is not the rebuild
		}
		stop := func() {}
		if cfg.Profile != nil {
			stop = cfg.Profile(s)
		}
		switch s {
		case ScenarioCommands:
			b.add(b.baselineAppends(ctx))
			b.add(b.commands(ctx))
		case ScenarioLag:
			b.add(b.lag(ctx)...)
		case ScenarioQueries:
			b.add(b.baselineRedisRoundTrips(ctx)...)
			b.add(b.queries(ctx)...)
		case ScenarioRebuild:
			b.add(b.baselineRedisPipelined(ctx))
			b.add(b.rebuild(ctx, fillErr))
		case ScenarioMemory:
			b.add(b.memory(ctx))
		}
		stop()
	}
	b.compare()
	b.report.Finished = time.Now().UTC()
	b.report.LoadAfter = loadAverage()
	return b.report, ctx.Err()
}

// add records results.
func (b *bencher) add(rs ...Result) {
	for _, r := range rs {
		if r.Name == "" {
			continue
		}
		b.report.Results = append(b.report.Results, r)
		b.p.say("bench: %-28s %s", r.Name, r.oneLine())
	}
}

// compare fills in every scenario's ratios to its baseline and its target.
func (b *bencher) compare() {
	for i := range b.report.Results {
		r := &b.report.Results[i]
		if base, ok := b.baselineByName(r.Baseline); ok {
			if base.Rate > 0 && r.Rate > 0 {
				r.RateRatio = r.Rate / base.Rate
			}
			if base.P99 > 0 && r.P99 > 0 {
				r.P99Ratio = float64(r.P99) / float64(base.P99)
			}
		}
		if t, ok := targets[r.Name]; ok && r.Count > 0 {
			r.Target = t.text
			met := t.met(r)
			r.TargetMet = &met
		}
	}
}

func (b *bencher) baselineByName(name string) (Result, bool) {
	for _, r := range b.report.Results {
		if r.Kind == "baseline" && r.Name == name {
			return r, true
		}
	}
	return Result{}, false
}

// target is one of the targets (2 cores, loopback, fsync on).
type target struct {
	text string
	met  func(*Result) bool
}

var targets = map[string]target{
	"commands":        {"≥ 5,000/s, p99 ≤ 25ms", func(r *Result) bool { return r.Rate >= 5000 && r.P99 <= 25 && r.Errors == 0 }},
	"lag":             {"p99 ≤ 50ms at 1,000/s", func(r *Result) bool { return r.P99 <= 50 && r.OfferedRate >= 1000 && r.Errors == 0 }},
	"queries/details": {"≥ 10,000/s, p99 ≤ 10ms", func(r *Result) bool { return r.Rate >= 10000 && r.P99 <= 10 && r.Errors == 0 }},
	"queries/report":  {"≥ 5,000/s", func(r *Result) bool { return r.Rate >= 5000 && r.Errors == 0 }},
	"rebuild":         {"≥ 50,000 events/s", func(r *Result) bool { return r.Rate >= 50000 && r.Errors == 0 }},
	"memory": {"peak RSS < 150 MB at 100k secrets, 1M events", func(r *Result) bool {
		return r.Extra["peakRssMB"] < 150 && r.Extra["secrets"] >= 100000 && r.Extra["events"] >= 1000000 && r.Errors == 0
	}},
}

// loadAverage is /proc/loadavg's first three fields, or "" off Linux.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
