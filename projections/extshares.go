package projections

// The external shares projection keeps the data behind the external share
// report (the sharer's "Sharing center > External share") and the
// administrators' sharing audit, under the prefix <p>:
//
//	<p>extshare:<shareId>        STRING  JSON extShareDoc: id, secretId,
//	                                     name, type, sharer (user ID),
//	                                     createdAt, recipient, expiresAt,
//	                                     maxAccesses (null: unlimited),
//	                                     accesses, status as recorded,
//	                                     createdPosition, revision. Never a
//	                                     link token or code, nor their hashes.
//	<p>extshares:by:<userId>     ZSET    the sharer's shares; score = commit
//	                                     of the creation position.
//	<p>extshares:all             ZSET    every share, same score.
//	<p>extshares:due             ZSET    approved shares; score = expiresAt
//	                                     in Unix seconds, for the expiry
//	                                     scheduler.
//	<p>checkpoint:extshares      STRING  as in secrets.go.
//
// It applies the events of the streams "extshare-*". Batches are applied exactly once as
// the secrets projection does: WATCH the checkpoint, read the documents the
// batch touches with it, fold, and write everything with the new checkpoint
// in one MULTI/EXEC.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// ExternalSharesProjection is the name of the external shares projection.
const ExternalSharesProjection = "extshares"

// ItemTypeAPISecret is the item type of an external share of an API secret.
const ItemTypeAPISecret = "apiSecret"

func (k keys) extShare(id string) string        { return string(k) + "extshare:" + id }
func (k keys) extSharesBy(userID string) string { return string(k) + "extshares:by:" + userID }
func (k keys) extSharesAll() string             { return string(k) + "extshares:all" }
func (k keys) extSharesDue() string             { return string(k) + "extshares:due" }

type extShareDoc struct {
	ID              string    `json:"id"`
	SecretID        string    `json:"secretId"`
	Name            string    `json:"name"`
	Type            string    `json:"type"`
	Sharer          string    `json:"sharer"`
	CreatedAt       time.Time `json:"createdAt"`
	Recipient       string    `json:"recipient"`
	ExpiresAt       time.Time `json:"expiresAt"`
	MaxAccesses     *int      `json:"maxAccesses"`
	Accesses        int       `json:"accesses"`
	Status          string    `json:"status"`
	CreatedPosition string    `json:"createdPosition"`
	Revision        uint64    `json:"revision"`
}

// ExternalShares is the external shares projection.
type ExternalShares struct{ redisProjection }

// NewExternalShares returns the external shares projection writing under
// prefix ("" means DefaultPrefix).
func NewExternalShares(rdb redis.UniversalClient, prefix string, logger *slog.Logger) *ExternalShares {
	return &ExternalShares{newRedisProjection(ExternalSharesProjection, rdb, prefix, logger)}
}

// StreamPrefixes is every stream, for the reason Secrets.StreamPrefixes
// gives; only external share events change this projection.
func (x *ExternalShares) StreamPrefixes() []string { return nil }

// Apply applies a batch exactly once and returns the checkpoint stored
// afterwards.
func (x *ExternalShares) Apply(ctx context.Context, b Batch) (eventstore.Position, error) {
	var events []decoded
	var shareIDs idList
	for _, r := range b.Events {
		if !strings.HasPrefix(r.StreamID, domain.ExternalShareStreamPrefix) || !domain.IsKnownEventType(r.Type) {
			continue
		}
		ev, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return eventstore.Position{}, fmt.Errorf("extshares projection: event %s at %s: %w", r.ID, r.Position, err)
		}
		if ev.At.IsZero() {
			ev.At = r.Created
		}
		ev.At = ev.At.UTC()
		events = append(events, decoded{rec: r, ev: ev})
		shareIDs.add(strings.TrimPrefix(r.StreamID, domain.ExternalShareStreamPrefix))
	}
	if len(events) == 0 {
		return b.Position, nil // nothing for us: acknowledged without a write (see Secrets.Apply)
	}
	cpKey := x.keys.checkpoint(ExternalSharesProjection)
	var stored eventstore.Position
	err := x.rdb.Watch(ctx, func(tx *redis.Tx) error {
		var cpCmd *redis.StringCmd
		var docCmds []*redis.SliceCmd
		_, err := tx.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			cpCmd = pipe.Get(ctx, cpKey)
			docCmds = mget(ctx, pipe, shareIDs.list, x.keys.extShare)
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("load: %w", err)
		}
		cp, err := parseCheckpoint(cpCmd.Result())
		if err != nil {
			return err
		}
		stored = cp
		if b.Position.Compare(cp) <= 0 {
			return nil
		}
		docs := map[string]*extShareDoc{}
		if err := decodeInto(shareIDs.list, docCmds, docs, "external share"); err != nil {
			return err
		}
		var dirty idList
		for _, e := range events {
			if e.rec.Position.Compare(cp) > 0 && x.apply(docs, e) {
				dirty.add(strings.TrimPrefix(e.rec.StreamID, domain.ExternalShareStreamPrefix))
			}
		}
		_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, id := range dirty.list {
				d := docs[id]
				b, err := json.Marshal(d)
				if err != nil {
					return err
				}
				pipe.Set(ctx, x.keys.extShare(id), b, 0)
				created, err := eventstore.ParsePosition(d.CreatedPosition)
				if err != nil {
					return fmt.Errorf("external share %s: %w", id, err)
				}
				z := redis.Z{Score: float64(created.Commit), Member: id}
				pipe.ZAdd(ctx, x.keys.extSharesBy(d.Sharer), z)
				pipe.ZAdd(ctx, x.keys.extSharesAll(), z)
				if d.Status == string(domain.ExternalShareApproved) {
					pipe.ZAdd(ctx, x.keys.extSharesDue(), redis.Z{Score: float64(d.ExpiresAt.Unix()), Member: id})
				} else {
					pipe.ZRem(ctx, x.keys.extSharesDue(), id)
				}
			}
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
		return eventstore.Position{}, fmt.Errorf("extshares projection: %w", err)
	}
	return stored, nil
}

// apply folds one event; false if it changed nothing.
func (x *ExternalShares) apply(docs map[string]*extShareDoc, e decoded) bool {
	id := strings.TrimPrefix(e.rec.StreamID, domain.ExternalShareStreamPrefix)
	d := docs[id]
	if c, ok := e.ev.Payload.(domain.ExternalShareCreated); ok {
		if d != nil {
			return false
		}
		docs[id] = &extShareDoc{ID: id, SecretID: c.SecretID, Name: c.SecretName, Type: ItemTypeAPISecret, Sharer: c.Sharer,
			CreatedAt: e.ev.At, Recipient: c.RecipientEmail, ExpiresAt: c.ExpiresAt.UTC(), MaxAccesses: c.MaxAccesses,
			Status: string(domain.ExternalShareApproved), CreatedPosition: e.rec.Position.String(), Revision: e.rec.Revision}
		return true
	}
	if d == nil {
		x.log.Warn("extshares projection: event for a share never created; skipped", "stream", e.rec.StreamID, "type", e.rec.Type)
		return false
	}
	if e.rec.Revision <= d.Revision {
		return false
	}
	d.Revision = e.rec.Revision
	switch p := e.ev.Payload.(type) {
	case domain.ExternalShareAccessed:
		d.Accesses = p.Accesses
	case domain.ExternalShareExhausted, domain.ExternalShareExpired:
		d.Status = string(domain.ExternalShareFinished)
	case domain.ExternalShareRevoked:
		d.Status, d.ExpiresAt = string(domain.ExternalShareCancelled), p.ExpiresAt.UTC()
	case domain.ExternalShareLocked:
		d.Status = string(domain.ExternalShareError)
	}
	return true
}

// Unlimited is what the report shows as the remaining accesses of a share
// without a maximum.
const Unlimited = "Unlimited"

// ExternalShareQuery filters and pages the external share report. Zero
// values do not filter.
type ExternalShareQuery struct {
	// Sharer keeps the shares of this user; empty keeps everyone's (the
	// administrators' sharing audit).
	Sharer string
	// ID keeps one share.
	ID string
	// Name keeps shares whose item name contains it, ignoring case.
	Name string
	// Type keeps shares of this item type.
	Type string
	// Recipient keeps shares whose recipient e-mail contains it.
	Recipient string
	// Username keeps shares whose sharer's username or name contains it.
	Username string
	// Status keeps shares with this status as of Now (Approved, Finished,
	// Cancelled, Error; any case).
	Status string
	// Remaining keeps shares with exactly this many accesses left, or
	// "Unlimited".
	Remaining string
	// From and To bound the creation date; ExpiresFrom and ExpiresTo the
	// expiration, each inclusive.
	From, To, ExpiresFrom, ExpiresTo time.Time
	// Now decides which approved shares already read as Finished.
	Now            time.Time
	Page, PageSize int
}

// ExternalShareRow is one row of the external share report.
type ExternalShareRow struct {
	ID          string    `json:"id"`
	SecretID    string    `json:"secretId"`
	Name        string    `json:"name"`
	Type        string    `json:"type"`
	Date        time.Time `json:"date"`
	Recipient   string    `json:"recipient"`
	Expiration  time.Time `json:"expiration"`
	MaxAccesses *int      `json:"maxAccesses"`
	Accesses    int       `json:"accesses"`
	// RemainingAccesses is a number, or "Unlimited".
	RemainingAccesses any    `json:"remainingAccesses"`
	Status            string `json:"status"`
	SharedBy          Sharer `json:"sharedBy"`
}

// Sharer is who made an external share.
type Sharer struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Username string `json:"username"`
}

// ExternalSharePage is one page of the report.
type ExternalSharePage struct {
	Items []ExternalShareRow `json:"items"`
	Total int                `json:"total"`
}

// ExternalShares returns one page of the report, newest first.
func (r *Reader) ExternalShares(ctx context.Context, q ExternalShareQuery) (ExternalSharePage, error) {
	key := r.keys.extSharesAll()
	if q.Sharer != "" {
		key = r.keys.extSharesBy(q.Sharer)
	}
	ids, err := r.rdb.ZRevRange(ctx, key, 0, -1).Result()
	if err != nil {
		return ExternalSharePage{}, fmt.Errorf("external shares: %w", err)
	}
	found := map[string]*extShareDoc{}
	if err := readDocs(ctx, r.rdb, ids, r.keys.extShare, found, "external share"); err != nil {
		return ExternalSharePage{}, err
	}
	var sharers []string
	for _, d := range found {
		sharers = append(sharers, d.Sharer)
	}
	users, err := r.userDocs(ctx, sharers)
	if err != nil {
		return ExternalSharePage{}, err
	}
	start, end := ReportQuery{Page: q.Page, PageSize: q.PageSize}.window()
	page := ExternalSharePage{Items: []ExternalShareRow{}}
	for _, id := range ids {
		d := found[id]
		if d == nil {
			continue
		}
		row := externalShareRow(d, users[d.Sharer], q.Now)
		if !q.match(row) {
			continue
		}
		if page.Total >= start && page.Total < end {
			page.Items = append(page.Items, row)
		}
		page.Total++
	}
	return page, nil
}

// ExternalShare returns one row of the report, or nil, nil.
func (r *Reader) ExternalShare(ctx context.Context, shareID string, now time.Time) (*ExternalShareRow, error) {
	found := map[string]*extShareDoc{}
	if err := readDocs(ctx, r.rdb, []string{shareID}, r.keys.extShare, found, "external share"); err != nil {
		return nil, err
	}
	d := found[shareID]
	if d == nil {
		return nil, nil
	}
	users, err := r.userDocs(ctx, []string{d.Sharer})
	if err != nil {
		return nil, err
	}
	row := externalShareRow(d, users[d.Sharer], now)
	return &row, nil
}

func externalShareRow(d *extShareDoc, sharer *userDoc, now time.Time) ExternalShareRow {
	row := ExternalShareRow{ID: d.ID, SecretID: d.SecretID, Name: d.Name, Type: d.Type, Date: d.CreatedAt, Recipient: d.Recipient,
		Expiration: d.ExpiresAt, MaxAccesses: d.MaxAccesses, Accesses: d.Accesses, RemainingAccesses: Unlimited, Status: d.Status,
		SharedBy: Sharer{ID: d.Sharer, Name: sharer.Name, Username: sharer.username()}}
	if d.MaxAccesses != nil {
		row.RemainingAccesses = max(*d.MaxAccesses-d.Accesses, 0)
	}
	// An approved share past its expiry is finished, whether or not the
	// scheduler has recorded it yet (domain.ExternalShare.StatusAt).
	if row.Status == string(domain.ExternalShareApproved) && !now.IsZero() && !now.Before(d.ExpiresAt) {
		row.Status = string(domain.ExternalShareFinished)
	}
	return row
}

func (q ExternalShareQuery) match(row ExternalShareRow) bool {
	inRange := func(t, from, to time.Time) bool {
		return (from.IsZero() || !t.Before(from)) && (to.IsZero() || !t.After(to))
	}
	remaining := Unlimited
	if n, ok := row.RemainingAccesses.(int); ok {
		remaining = strconv.Itoa(n)
	}
	switch {
	case q.ID != "" && q.ID != row.ID,
		q.Name != "" && !containsFold(row.Name, q.Name),
		q.Type != "" && q.Type != row.Type,
		q.Recipient != "" && !containsFold(row.Recipient, q.Recipient),
		q.Username != "" && !containsFold(row.SharedBy.Username, q.Username) && !containsFold(row.SharedBy.Name, q.Username),
		q.Status != "" && !strings.EqualFold(q.Status, row.Status),
		q.Remaining != "" && !strings.EqualFold(q.Remaining, remaining),
		!inRange(row.Date, q.From, q.To),
		!inRange(row.Expiration, q.ExpiresFrom, q.ExpiresTo):
		return false
	}
	return true
}

// DueExternalShares lists the approved shares whose expiry is at or before
// now, at most limit of them, for the scheduler that records their expiry.
func (r *Reader) DueExternalShares(ctx context.Context, now time.Time, limit int) ([]string, error) {
	ids, err := r.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: r.keys.extSharesDue(), ByScore: true,
		Start: "-inf", Stop: strconv.FormatInt(now.Unix(), 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("due external shares: %w", err)
	}
	return ids, nil
}
