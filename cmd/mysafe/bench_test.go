package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/mysafe/mysafe/cmd/mysafe/internal/bench"
)

// TestBenchRunsEveryScenario runs `mysafe bench` end to end with tiny
// durations, against a Redis of its own (so that it also takes the path
// that cleans up a shared Redis): every scenario and baseline must report
// figures, no request may fail, and no key may be left behind. It asserts
// nothing about speed.
func TestBenchRunsEveryScenario(t *testing.T) {
	redisServer := miniredis.RunT(t)
	jsonFile := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	o := benchOptions{
		cfg: bench.Config{
			Scenarios: bench.DefaultScenarios, Duration: 200 * time.Millisecond, BaselineDuration: 100 * time.Millisecond,
			Clients: 4, Users: 3, SecretsPerUser: 5, LagRate: 50, RebuildEvents: 200,
		},
		redisURL: "redis://" + redisServer.Addr(),
		jsonFile: jsonFile,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := runBench(ctx, o, &stdout, &stderr); err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}

	raw, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var report bench.Report
	if err := json.Unmarshal(raw, &report); err != nil {
		t.Fatal(err)
	}
	want := []string{"store append", "commands", "report, no wait", "lag", "redis PING", "redis GET",
		"queries/report", "queries/details", "queries/cards", "redis pipelined SET", "rebuild"}
	var got []string
	for _, r := range report.Results {
		got = append(got, r.Name)
		if r.Count == 0 || r.Rate <= 0 || r.Errors != 0 {
			t.Errorf("%s: %d counted at %.1f/s with %d errors %v; want figures and no errors", r.Name, r.Count, r.Rate, r.Errors, r.ErrorSamples)
		}
		if r.Kind == "scenario" && r.Baseline != "" && r.RateRatio == 0 {
			t.Errorf("%s: no ratio to its baseline %q", r.Name, r.Baseline)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("results %q; want %q", got, want)
	}
	for _, name := range want {
		if !strings.Contains(stdout.String(), name) {
			t.Errorf("the table does not show %q:\n%s", name, stdout.String())
		}
	}
	if keys := redisServer.Keys(); len(keys) > 0 {
		t.Errorf("the bench left %d keys in Redis, e.g. %q", len(keys), keys[0])
	}
}
