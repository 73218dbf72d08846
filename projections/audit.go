package projections

// The audit projection keeps the Audit screen's report: one record per
// audit-relevant event (domain.AuditEvent), with indexes that answer a
// filtered page newest first without scanning the log. Under the prefix
// <p>:
//
//	<p>audit:r:<seq>          STRING JSON AuditRecord; seq is a 12-digit
//	                                 hex number the projection gives records
//	                                 in log order (1, 2, ...)
//	<p>audit:seq              STRING the last seq given
//	<p>audit:i:all            ZSET   every record
//	<p>audit:i:secret:<id>    ZSET   records of one secret
//	<p>audit:i:name:<name>    ZSET   records of the secret that bore this
//	                                 name (lower case) when they happened
//	<p>audit:i:type:<type>    ZSET   records of one event type
//	<p>audit:i:user:<id>      ZSET   records whose actor is this user
//	<p>audit:i:ip:<ip>        ZSET   records from this client IP
//	<p>audit:name:<secretId>  STRING the secret's current name, to name the
//	                                 secret in records of events that do not
//	<p>audit:reach:<type>:<id> ZSET  ids of every secret the principal ever
//	                                 owned or was granted (score: the commit
//	                                 position of the first time); never
//	                                 shrinks, so access-at-time queries know
//	                                 which secrets' histories to fold
//	<p>checkpoint:audit       STRING the log is applied up to here
//
// In every index ZSET the member is the record's seq and the score is the
// event's time in microseconds since 1970 (exact in a float64 until the
// year 2255). Redis orders equal scores by member, and seqs have a fixed
// width, so an index lists records by (time, seq): newest first is a
// reverse range by score, and a page cursor is the (time, seq) of the last
// record seen, which stays valid however many records arrive meanwhile.
//
// A page walks one index, the smallest of those the filters name (one
// ZCARD each to choose), from the cursor backwards within the time bounds,
// and checks each candidate against the other filters' indexes (ZMSCORE),
// then loads the records that pass (MGET): a few round trips whatever the
// log's size. Its cost grows with the candidates the other filters reject,
// so a page stops after MaxAuditScan candidates and hands back a cursor to
// go on from: a page may then hold fewer records than asked for, and the
// report is finished only when it has no next cursor.
//
// Cost in Redis: one record (about 400 to 600 bytes of JSON) and five or
// six index entries per event, 1,343 bytes an event in all as measured by
// BenchmarkAuditReportOnALargeLog (audit_bench_test.go), where a page
// over a million events took 0.7 to 3.1 ms.
//
// Each batch is applied exactly once, as in the secrets projection: WATCH
// the checkpoint, read it with the seq counter and the names the batch
// needs, and write the records, the index entries, the counter and the
// checkpoint in one MULTI/EXEC.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// AuditProjection is the name of the audit projection.
const AuditProjection = "audit"

// MaxAuditScan bounds the index entries one page examines.
const MaxAuditScan = 5000

func (k keys) auditRecord(seq string) string { return string(k) + "audit:r:" + seq }
func (k keys) auditSeq() string              { return string(k) + "audit:seq" }
func (k keys) auditIndex(kind, v string) string {
	if kind == "all" {
		return string(k) + "audit:i:all"
	}
	return string(k) + "audit:i:" + kind + ":" + v
}
func (k keys) auditName(secretID string) string { return string(k) + "audit:name:" + secretID }
func (k keys) reach(p domain.Principal) string {
	return string(k) + "audit:reach:" + string(p.Type) + ":" + p.ID
}

// seqMember is a record's seq as index member: fixed width, so that the
// byte order of members is their numeric order.
func seqMember(seq uint64) string { return fmt.Sprintf("%012x", seq) }

// AuditRecord is one event as the Audit screen and its exports show it. It
// never holds a secret value: Data is domain.PublicData.
type AuditRecord struct {
	EventID       string         `json:"eventId"`
	Position      string         `json:"position"`
	Stream        string         `json:"stream"`
	Revision      uint64         `json:"revision"`
	Type          string         `json:"type"`
	Event         string         `json:"event"` // the screen's name: New, Change, View, ...
	SecretID      string         `json:"secretId,omitempty"`
	SecretName    string         `json:"secretName,omitempty"`
	Actor         Person         `json:"actor"`
	At            time.Time      `json:"at"`
	IP            string         `json:"ip,omitempty"`
	UserAgent     string         `json:"userAgent,omitempty"`
	CorrelationID string         `json:"correlationId,omitempty"`
	Data          map[string]any `json:"data"`
	Hash          string         `json:"hash,omitempty"`
}

// NewAuditRecord makes the record of one audit-relevant event; ok is false
// for events the audit does not show. secretName is the secret's name
// before the event (the event's own, for a create or rename).
func NewAuditRecord(r eventstore.RecordedEvent, e domain.Event, secretName string) (AuditRecord, bool) {
	name, ok := domain.AuditEvent(r.Type)
	if !ok {
		return AuditRecord{}, false
	}
	at := e.At
	if at.IsZero() {
		at = r.Created
	}
	rec := AuditRecord{EventID: r.ID.String(), Position: r.Position.String(), Stream: r.StreamID, Revision: r.Revision,
		Type: r.Type, Event: name, Actor: Person{ID: e.Actor.ID, Name: e.Actor.Name}, At: at.UTC(),
		IP: e.ClientIP, UserAgent: e.UserAgent, CorrelationID: e.CorrelationID, Data: domain.PublicData(e),
		Hash: eventstore.HashOf(r), SecretName: secretName}
	if id, ok := strings.CutPrefix(r.StreamID, domain.SecretStreamPrefix); ok {
		rec.SecretID = id
	}
	switch p := e.Payload.(type) {
	case domain.SecretCreated:
		rec.SecretName = p.Fields.Name
	case domain.SecretUpdated:
		rec.SecretName = p.Fields.Name
	}
	return rec, true
}

// Audit is the audit projection.
type Audit struct{ redisProjection }

// NewAudit returns the audit projection writing under prefix ("" means
// DefaultPrefix).
func NewAudit(rdb redis.UniversalClient, prefix string, logger *slog.Logger) *Audit {
	return &Audit{newRedisProjection(AuditProjection, rdb, prefix, logger)}
}

// StreamPrefixes is every stream: which events count is domain.AuditEvent's
// rule, not a stream category's.
func (a *Audit) StreamPrefixes() []string { return nil }

// Apply applies a batch exactly once and returns the checkpoint stored
// afterwards.
func (a *Audit) Apply(ctx context.Context, b Batch) (eventstore.Position, error) {
	var events []decoded
	var secretIDs []string
	for _, r := range b.Events {
		if _, ok := domain.AuditEvent(r.Type); !ok {
			continue
		}
		ev, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return eventstore.Position{}, fmt.Errorf("audit projection: event %s at %s in %s: %w", r.ID, r.Position, r.StreamID, err)
		}
		events = append(events, decoded{rec: r, ev: ev})
		if id, ok := strings.CutPrefix(r.StreamID, domain.SecretStreamPrefix); ok && !slices.Contains(secretIDs, id) {
			secretIDs = append(secretIDs, id)
		}
	}
	cpKey := a.keys.checkpoint(AuditProjection)
	var stored eventstore.Position
	err := a.rdb.Watch(ctx, func(tx *redis.Tx) error {
		var cpCmd, seqCmd *redis.StringCmd
		var namesCmd *redis.SliceCmd
		_, err := tx.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			cpCmd = pipe.Get(ctx, cpKey)
			seqCmd = pipe.Get(ctx, a.keys.auditSeq())
			if len(secretIDs) > 0 {
				namesCmd = pipe.MGet(ctx, mapKeys(secretIDs, a.keys.auditName)...)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("load: %w", err)
		}
		if namesCmd != nil && namesCmd.Err() != nil {
			return fmt.Errorf("load: %w", namesCmd.Err())
		}
		cp, err := parseCheckpoint(cpCmd.Result())
		if err != nil {
			return err
		}
		stored = cp
		if b.Position.Compare(cp) <= 0 {
			return nil // a redelivery
		}
		seq, err := seqCmd.Uint64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("load seq: %w", err)
		}
		names := map[string]string{}
		if namesCmd != nil {
			for i, v := range namesCmd.Val() {
				if s, ok := v.(string); ok {
					names[secretIDs[i]] = s
				}
			}
		}
		_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, e := range events {
				if e.rec.Position.Compare(cp) <= 0 {
					continue
				}
				rec, _ := NewAuditRecord(e.rec, e.ev, names[strings.TrimPrefix(e.rec.StreamID, domain.SecretStreamPrefix)])
				if rec.SecretID != "" {
					if rec.SecretName != names[rec.SecretID] {
						names[rec.SecretID] = rec.SecretName
						pipe.Set(ctx, a.keys.auditName(rec.SecretID), rec.SecretName, 0)
					}
					a.reach(ctx, pipe, rec.SecretID, e)
				}
				seq++
				if err := a.index(ctx, pipe, seq, rec); err != nil {
					return err
				}
			}
			pipe.Set(ctx, a.keys.auditSeq(), seq, 0)
			pipe.Set(ctx, cpKey, b.Position.String(), 0)
			return nil
		})
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		stored = b.Position
		return nil
	}, cpKey)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("audit projection: %w", err)
	}
	return stored, nil
}

// index queues a record and its index entries.
func (a *Audit) index(ctx context.Context, pipe redis.Pipeliner, seq uint64, rec AuditRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	member := seqMember(seq)
	pipe.Set(ctx, a.keys.auditRecord(member), b, 0)
	z := redis.Z{Score: float64(rec.At.UnixMicro()), Member: member}
	pipe.ZAdd(ctx, a.keys.auditIndex("all", ""), z)
	pipe.ZAdd(ctx, a.keys.auditIndex("type", rec.Type), z)
	for _, f := range []struct{ kind, v string }{
		{"secret", rec.SecretID}, {"name", normalName(rec.SecretName)}, {"user", rec.Actor.ID}, {"ip", rec.IP},
	} {
		if f.v != "" {
			pipe.ZAdd(ctx, a.keys.auditIndex(f.kind, f.v), z)
		}
	}
	return nil
}

// reach records that the owner or a grantee reached the secret.
func (a *Audit) reach(ctx context.Context, pipe redis.Pipeliner, secretID string, e decoded) {
	var p domain.Principal
	switch v := e.ev.Payload.(type) {
	case domain.SecretCreated:
		p = domain.User(v.Owner)
	case domain.ShareGranted:
		p = v.Principal
	default:
		return
	}
	pipe.ZAddNX(ctx, a.keys.reach(p), redis.Z{Score: float64(e.rec.Position.Commit), Member: secretID})
}

// normalName is a secret name as the name index keys it.
func normalName(name string) string { return strings.ToLower(strings.TrimSpace(name)) }

// AuditQuery selects records of the audit report. Empty fields do not
// filter.
type AuditQuery struct {
	SecretName string // the secret's name when the event happened, any case
	SecretID   string
	// Types keeps records of these event types; nil keeps every type, an
	// empty non-nil slice keeps none.
	Types []string
	User  string // the actor's user ID
	IP    string
	// From and To bound the event time, both inclusive; zero is unbounded.
	From, To time.Time
	// Cursor is the Next of the previous page; "" starts at the newest.
	Cursor string
	// Limit bounds the records of the page; 0 means 50.
	Limit int
}

// AuditPage is one page of the audit report, newest first.
type AuditPage struct {
	Items []AuditRecord `json:"items"`
	// Next is the cursor of the next page; "" when there is none.
	Next string `json:"next,omitempty"`
}

// ErrBadCursor is a cursor this reader did not make.
var ErrBadCursor = errors.New("not a cursor of the audit report")

// auditCursor is a place in an index: the (time, seq) of the last entry
// examined.
type auditCursor struct {
	score  int64
	member string
}

func (c auditCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte("a1:" + strconv.FormatInt(c.score, 10) + ":" + c.member))
}

func parseAuditCursor(s string) (auditCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return auditCursor{}, ErrBadCursor
	}
	parts := strings.Split(string(b), ":")
	if len(parts) != 3 || parts[0] != "a1" || len(parts[2]) != 12 {
		return auditCursor{}, ErrBadCursor
	}
	score, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return auditCursor{}, ErrBadCursor
	}
	if _, err := strconv.ParseUint(parts[2], 16, 64); err != nil {
		return auditCursor{}, ErrBadCursor
	}
	return auditCursor{score: score, member: parts[2]}, nil
}

// AuditReader answers the audit report and the reach index.
type AuditReader struct {
	rdb  redis.UniversalClient
	keys keys
}

// NewAuditReader reads the audit projection under prefix ("" means
// DefaultPrefix).
func NewAuditReader(rdb redis.UniversalClient, prefix string) *AuditReader {
	return &AuditReader{rdb: rdb, keys: newKeys(prefix)}
}

// Reached lists the ids of every secret the principal ever owned or was
// granted, in the order it first reached them.
func (r *AuditReader) Reached(ctx context.Context, p domain.Principal) ([]string, error) {
	ids, err := r.rdb.ZRange(ctx, r.keys.reach(p), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("secrets reached by %s: %w", p, err)
	}
	return ids, nil
}

// Events answers one page of the audit report.
func (r *AuditReader) Events(ctx context.Context, q AuditQuery) (AuditPage, error) {
	page := AuditPage{Items: []AuditRecord{}}
	if q.Limit <= 0 {
		q.Limit = 50
	}
	if q.Types != nil && len(q.Types) == 0 {
		return page, nil
	}
	pos := auditCursor{score: math.MaxInt64, member: "~"} // before the newest
	if q.Cursor != "" {
		c, err := parseAuditCursor(q.Cursor)
		if err != nil {
			return page, err
		}
		pos = c
	}
	if !q.To.IsZero() && q.To.UnixMicro() < pos.score {
		pos = auditCursor{score: q.To.UnixMicro(), member: "~"}
	}
	minScore := "-inf"
	if !q.From.IsZero() {
		minScore = strconv.FormatInt(q.From.UnixMicro(), 10)
	}

	// The filters that have an index; the smallest is walked, the others
	// checked.
	var filters []string
	for _, f := range []struct{ kind, v string }{
		{"secret", q.SecretID}, {"name", normalName(q.SecretName)}, {"user", q.User}, {"ip", q.IP},
	} {
		if f.v != "" {
			filters = append(filters, r.keys.auditIndex(f.kind, f.v))
		}
	}
	if len(q.Types) == 1 {
		filters = append(filters, r.keys.auditIndex("type", q.Types[0]))
	}
	walk, checks, err := r.plan(ctx, filters)
	if err != nil {
		return page, err
	}

	chunk := min(max(2*q.Limit, 64), 1000)
	for scanned := 0; scanned < MaxAuditScan; {
		entries, err := r.after(ctx, walk, pos, minScore, chunk)
		if err != nil {
			return page, err
		}
		if len(entries) == 0 {
			return page, nil // the walk is over: no next page
		}
		scanned += len(entries)
		members := make([]string, len(entries))
		for i, e := range entries {
			members[i] = e.member
		}
		keep, err := r.inAll(ctx, checks, members)
		if err != nil {
			return page, err
		}
		recs, err := r.records(ctx, members, keep)
		if err != nil {
			return page, err
		}
		for i, e := range entries {
			pos = e
			rec := recs[i]
			if rec == nil || (q.Types != nil && !slices.Contains(q.Types, rec.Type)) {
				continue
			}
			page.Items = append(page.Items, *rec)
			if len(page.Items) == q.Limit {
				page.Next = pos.String()
				return page, nil
			}
		}
	}
	page.Next = pos.String() // the scan budget is spent: go on from here
	return page, nil
}

// plan picks the smallest filter index to walk (all records without any
// filter) and returns the others to check.
func (r *AuditReader) plan(ctx context.Context, filters []string) (walk string, checks []string, err error) {
	switch len(filters) {
	case 0:
		return r.keys.auditIndex("all", ""), nil, nil
	case 1:
		return filters[0], nil, nil
	}
	cards := make([]*redis.IntCmd, len(filters))
	_, err = r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, f := range filters {
			cards[i] = pipe.ZCard(ctx, f)
		}
		return nil
	})
	if err != nil {
		return "", nil, fmt.Errorf("audit report: %w", err)
	}
	best := 0
	for i, c := range cards {
		if c.Val() < cards[best].Val() {
			best = i
		}
	}
	for i, f := range filters {
		if i != best {
			checks = append(checks, f)
		}
	}
	return filters[best], checks, nil
}

// after returns up to n entries of the index that come after pos in
// newest-first order, no older than minScore. Entries with pos's own score
// are read again and dropped up to pos; should more than n share it, the
// read widens until it gets past them.
func (r *AuditReader) after(ctx context.Context, index string, pos auditCursor, minScore string, n int) ([]auditCursor, error) {
	maxScore := "+inf"
	if pos.score != math.MaxInt64 {
		maxScore = strconv.FormatInt(pos.score, 10)
	}
	for count := n; ; count *= 2 {
		zs, err := r.rdb.ZRevRangeByScoreWithScores(ctx, index, &redis.ZRangeBy{Max: maxScore, Min: minScore, Count: int64(count)}).Result()
		if err != nil {
			return nil, fmt.Errorf("audit report: %w", err)
		}
		out := make([]auditCursor, 0, len(zs))
		for _, z := range zs {
			e := auditCursor{score: int64(z.Score), member: z.Member.(string)}
			if e.score == pos.score && e.member >= pos.member {
				continue
			}
			out = append(out, e)
		}
		if len(out) > 0 || len(zs) < count {
			return out, nil
		}
	}
}

// inAll reports which members are in every one of the check indexes.
func (r *AuditReader) inAll(ctx context.Context, checks []string, members []string) ([]bool, error) {
	keep := make([]bool, len(members))
	for i := range keep {
		keep[i] = true
	}
	if len(checks) == 0 {
		return keep, nil
	}
	cmds := make([]*redis.FloatSliceCmd, len(checks))
	_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, c := range checks {
			cmds[i] = pipe.ZMScore(ctx, c, members...)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("audit report: %w", err)
	}
	for _, c := range cmds {
		// ZMSCORE answers nil for a member that is not there, which
		// go-redis reads as 0; no record has time 0, so 0 is absent.
		for i, score := range c.Val() {
			if score == 0 {
				keep[i] = false
			}
		}
	}
	return keep, nil
}

// records loads the records of the kept members; nil where not kept or
// missing.
func (r *AuditReader) records(ctx context.Context, members []string, keep []bool) ([]*AuditRecord, error) {
	out := make([]*AuditRecord, len(members))
	var keys []string
	var at []int
	for i, m := range members {
		if keep[i] {
			keys = append(keys, r.keys.auditRecord(m))
			at = append(at, i)
		}
	}
	if len(keys) == 0 {
		return out, nil
	}
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("audit report: %w", err)
	}
	for j, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var rec AuditRecord
		if err := json.Unmarshal([]byte(s), &rec); err != nil {
			return nil, fmt.Errorf("audit record %s: %w", members[at[j]], err)
		}
		out[at[j]] = &rec
	}
	return out, nil
}
