package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"

	"github.com/mysafe/mysafe/eventstore"
)

// oneLine is a result's headline for the progress output.
func (r Result) oneLine() string {
	if r.Count == 0 && r.Errors == 0 {
		return r.Note
	}
	s := fmt.Sprintf("%s %s/s", humanRate(r.Rate), r.Unit)
	if r.P99 > 0 {
		s += fmt.Sprintf("  p50 %s  p99 %s", r.P50, r.P99)
	}
	if r.Errors > 0 {
		s += fmt.Sprintf("  %d ERRORS", r.Errors)
	}
	return s
}

// WriteTable prints the report as a table: baselines first, then each
// scenario beside its baseline with the ratios.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "mysafe bench — %s, %d CPUs (GOMAXPROCS %d), %s\n", r.Started.Format("2006-01-02 15:04:05Z"), r.Machine.CPUs, r.Machine.GOMAXPROCS, r.Machine.GoVersion)
	fmt.Fprintf(w, "service %s · store %s · redis %s\n", r.Service, r.Store, r.Redis)
	fmt.Fprintf(w, "seed: %s · %d clients · %s per scenario · load average before %s, after %s\n\n", r.Seed, r.Clients, r.Duration, r.LoadBefore, r.LoadAfter)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tclients\tcount\trate/s\tp50\tp95\tp99\tmax\terrors\t vs baseline\trate ×\tp99 ×\ttarget\t\t")
	for _, kind := range []string{"baseline", "scenario"} {
		for _, x := range r.Results {
			if x.Kind != kind {
				continue
			}
			clients := "-"
			if x.OfferedRate > 0 {
				clients = fmt.Sprintf("@%s/s", humanRate(x.OfferedRate))
			} else if x.Clients > 0 {
				clients = fmt.Sprint(x.Clients)
			}
			if x.Count == 0 && x.Errors == 0 {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t \t\t\t%s\t\t\n", x.Name, clients, x.Target)
				continue
			}
			met := ""
			if x.TargetMet != nil {
				met = map[bool]string{true: "met", false: "MISSED"}[*x.TargetMet]
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s %s\t%s\t%s\t%s\t%s\t%d\t %s\t%s\t%s\t%s\t%s\t\n",
				x.Name, clients, x.Count, humanRate(x.Rate), x.Unit, x.P50, x.P95, x.P99, x.Max, x.Errors,
				x.Baseline, ratio(x.RateRatio), ratio(x.P99Ratio), x.Target, met)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, x := range r.Results {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(x.Extra)) {
			parts = append(parts, fmt.Sprintf("%s=%s", k, trimFloat(x.Extra[k])))
		}
		if x.Note != "" || len(parts) > 0 {
			line := fmt.Sprintf("  %s: %s", x.Name, x.Note)
			if len(parts) > 0 {
				line += " [" + strings.Join(parts, " ") + "]"
			}
			fmt.Fprintln(w, line)
		}
		for _, e := range x.ErrorSamples {
			fmt.Fprintf(w, "    error: %s\n", e)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func ratio(x float64) string {
	switch {
	case x == 0:
		return "-"
	case x < 0.01:
		return fmt.Sprintf("%.4f", x)
	case x < 10:
		return fmt.Sprintf("%.2f", x)
	}
	return fmt.Sprintf("%.0f", x)
}

func humanRate(x float64) string {
	switch {
	case x >= 100:
		return commas(int64(x + 0.5))
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func trimFloat(x float64) string {
	if x == float64(int64(x)) {
		return fmt.Sprint(int64(x))
	}
	return fmt.Sprintf("%.2f", x)
}

// ConflictCounter is an event store that counts appends refused for a
// stale expected revision: each one makes eventstore.Execute load the
// stream and decide again.
type ConflictCounter struct {
	eventstore.Store
	n atomic.Uint64
}

// Append counts conflicts.
func (c *ConflictCounter) Append(ctx context.Context, stream string, expected eventstore.ExpectedRevision, events ...eventstore.EventData) (eventstore.AppendResult, error) {
	res, err := c.Store.Append(ctx, stream, expected, events...)
	if errors.Is(err, eventstore.ErrConflict) {
		c.n.Add(1)
	}
	return res, err
}

// Conflicts is the number of conflicts so far.
func (c *ConflictCounter) Conflicts() uint64 { return c.n.Load() }
