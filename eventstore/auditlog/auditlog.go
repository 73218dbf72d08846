// Package auditlog reads the event log for auditors: streaming exports of
// its events (CSV or NDJSON, never a secret value) and verification of its
// hash chains (eventstore/chain.go). Both read the log in pages, so their
// memory does not grow with the log: an export holds one page of events,
// a verification one page and one small head per stream.
//
// The HTTP API (GET /api/v1/audit/export, /audit/verify) and the CLI
// (`mysafe export`, `mysafe audit verify --data-dir`) share this code.
package auditlog

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// PageSize is how many events one read of the log returns.
const PageSize = 1000

// Format of an export.
type Format string

const (
	CSV    Format = "csv"
	NDJSON Format = "ndjson"
)

// ParseFormat reads a format name; "" is CSV.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case "":
		return CSV, nil
	case CSV, NDJSON:
		return f, nil
	}
	return "", fmt.Errorf("format %q: want csv or ndjson", s)
}

// ContentType is the media type of an export in this format.
func (f Format) ContentType() string {
	if f == NDJSON {
		return "application/x-ndjson"
	}
	return "text/csv; charset=utf-8"
}

// Filter selects the events of an export. Zero fields select everything.
type Filter struct {
	// From and To bound the event's recorded time, both inclusive.
	From, To time.Time
	// Types keeps only these event types.
	Types []string
}

func (f Filter) keeps(typ string, at time.Time) bool {
	return (len(f.Types) == 0 || slices.Contains(f.Types, typ)) &&
		(f.From.IsZero() || !at.Before(f.From)) && (f.To.IsZero() || !at.After(f.To))
}

// Row is one exported event. Data is domain.PublicData: no secret value,
// sealed or not, and no wrapped key.
type Row struct {
	Position      string         `json:"position"`
	EventID       string         `json:"eventId"`
	Stream        string         `json:"stream"`
	Revision      uint64         `json:"revision"`
	Type          string         `json:"type"`
	Event         string         `json:"event,omitempty"` // the Audit screen's name, if it lists the type
	At            time.Time      `json:"at"`
	Actor         domain.Actor   `json:"actor"`
	IP            string         `json:"ip,omitempty"`
	UserAgent     string         `json:"userAgent,omitempty"`
	CorrelationID string         `json:"correlationId,omitempty"`
	Data          map[string]any `json:"data"`
	// Hash is the event's chain hash; "" for an event written before the
	// chain existed.
	Hash string `json:"hash,omitempty"`
}

// csvHeader names the CSV columns.
var csvHeader = []string{"position", "eventId", "stream", "revision", "type", "event", "at",
	"actorId", "actorName", "ip", "userAgent", "correlationId", "data", "hash"}

func (r Row) csv() ([]string, error) {
	data, err := json.Marshal(r.Data)
	if err != nil {
		return nil, err
	}
	return []string{r.Position, r.EventID, r.Stream, strconv.FormatUint(r.Revision, 10), r.Type, r.Event,
		r.At.Format(time.RFC3339Nano), r.Actor.ID, r.Actor.Name, r.IP, r.UserAgent, r.CorrelationID, string(data), r.Hash}, nil
}

// rowOf decodes a recorded event into its export row. An event this build
// cannot decode (a newer type) is exported without its data, not dropped.
func rowOf(e eventstore.RecordedEvent) Row {
	r := Row{Position: e.Position.String(), EventID: e.ID.String(), Stream: e.StreamID, Revision: e.Revision,
		Type: e.Type, At: e.Created.UTC(), Data: map[string]any{}, Hash: eventstore.HashOf(e)}
	r.Event, _ = domain.AuditEvent(e.Type)
	ev, err := domain.Decode(e.Type, e.Data, e.Metadata)
	if err != nil {
		return r
	}
	if !ev.At.IsZero() {
		r.At = ev.At.UTC()
	}
	r.Actor, r.IP, r.UserAgent, r.CorrelationID = ev.Actor, ev.ClientIP, ev.UserAgent, ev.CorrelationID
	r.Data = domain.PublicData(ev)
	return r
}

// Neutralize defuses a CSV cell that a spreadsheet would read as a
// formula (OWASP's CSV injection advice): a cell starting with =, +, -, @,
// a tab or a carriage return gets a leading single quote.
func Neutralize(cell string) string {
	if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
		return "'" + cell
	}
	return cell
}

// Progress is told, after each page, how many events were written and how
// far the log was read.
type Progress func(written uint64, read eventstore.Position)

// Pages reads the whole log forwards in pages of PageSize and calls fn for
// each page, until the end or an error.
func Pages(ctx context.Context, store eventstore.Store, fn func(page []eventstore.RecordedEvent) error) error {
	from := eventstore.Start
	first := true
	for {
		max := uint64(PageSize)
		if !first {
			max++ // From is inclusive: the last event read comes again first
		}
		page, err := store.ReadAll(ctx, eventstore.ReadAllOptions{From: from, Max: max})
		if err != nil {
			return err
		}
		if !first && len(page) > 0 && page[0].Position == from {
			page = page[1:]
		}
		if len(page) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			return err
		}
		from, first = page[len(page)-1].Position, false
	}
}

// Head is the position of the last event of the log; eventstore.Start for
// an empty log.
func Head(ctx context.Context, store eventstore.Store) (eventstore.Position, error) {
	last, err := store.ReadAll(ctx, eventstore.ReadAllOptions{Direction: eventstore.Backwards, From: eventstore.End, Max: 1})
	if err != nil || len(last) == 0 {
		return eventstore.Start, err
	}
	return last[0].Position, nil
}

// Export writes the events the filter keeps, in log order, as CSV (with a
// header row) or NDJSON (one JSON object a line), and returns how many it
// wrote. Output is flushed after every page; flush, if not nil, is called
// then too (an HTTP answer pushes the page to the client).
func Export(ctx context.Context, store eventstore.Store, w io.Writer, format Format, filter Filter, progress Progress, flush func()) (uint64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var cw *csv.Writer
	if format == CSV {
		cw = csv.NewWriter(bw)
		if err := cw.Write(csvHeader); err != nil {
			return 0, err
		}
	}
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	var written uint64
	err := Pages(ctx, store, func(page []eventstore.RecordedEvent) error {
		for _, e := range page {
			row := rowOf(e)
			if !filter.keeps(row.Type, row.At) {
				continue
			}
			if cw != nil {
				cells, err := row.csv()
				if err != nil {
					return err
				}
				for i := range cells {
					cells[i] = Neutralize(cells[i])
				}
				if err := cw.Write(cells); err != nil {
					return err
				}
			} else if err := enc.Encode(row); err != nil {
				return err
			}
			written++
		}
		if cw != nil {
			cw.Flush()
			if err := cw.Error(); err != nil {
				return err
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if flush != nil {
			flush()
		}
		if progress != nil {
			progress(written, page[len(page)-1].Position)
		}
		return nil
	})
	if err != nil {
		return written, err
	}
	if cw != nil {
		cw.Flush() // the header of an empty export
		if err := cw.Error(); err != nil {
			return written, err
		}
	}
	return written, bw.Flush()
}

// Report is the outcome of a verification.
type Report struct {
	// Stream is the stream verified; "" for the whole log.
	Stream string `json:"stream,omitempty"`
	// Events counts the events checked, Hashed those that carry a hash,
	// Unhashed those written before the chain existed.
	Events   uint64 `json:"events"`
	Hashed   uint64 `json:"hashed"`
	Unhashed uint64 `json:"unhashed"`
	// OK is true when every chain matched.
	OK bool `json:"ok"`
	// Broken names the first event that does not match; nil when OK.
	Broken *Break `json:"broken,omitempty"`
}

// Break is the first event whose hash does not match.
type Break struct {
	Stream   string `json:"stream"`
	Revision uint64 `json:"revision"`
	Position string `json:"position"`
	EventID  string `json:"eventId"`
	Reason   string `json:"reason"`
}

// Verify recomputes the hash chains of one stream, or of every stream when
// stream is "", and names the first event that does not match. An error
// is a failure to read the log, not a broken chain.
func Verify(ctx context.Context, store eventstore.Store, stream string, progress Progress) (Report, error) {
	v := eventstore.NewVerifier()
	rep := Report{Stream: stream}
	var broken *eventstore.ChainError
	check := func(page []eventstore.RecordedEvent) error {
		for _, e := range page {
			if err := v.Check(e); err != nil {
				if !errors.As(err, &broken) {
					return err
				}
				return errStop
			}
		}
		if progress != nil {
			progress(v.Events, page[len(page)-1].Position)
		}
		return nil
	}
	var err error
	if stream == "" {
		err = Pages(ctx, store, check)
	} else {
		var events []eventstore.RecordedEvent
		events, err = store.ReadStream(ctx, stream, eventstore.ReadStreamOptions{})
		if err == nil {
			err = check(events)
		}
	}
	if err != nil && !errors.Is(err, errStop) {
		return rep, err
	}
	rep.Events, rep.Hashed, rep.Unhashed = v.Events, v.Hashed, v.Unhashed
	rep.OK = broken == nil
	if broken != nil {
		rep.Broken = &Break{Stream: broken.Stream, Revision: broken.Revision, Position: broken.Position.String(),
			EventID: broken.EventID, Reason: broken.Reason}
	}
	return rep, nil
}

var errStop = errors.New("stop")
