package projections

// The secrets projection keeps, under a key prefix <p> (DefaultPrefix
// "mysafe:" unless configured), the data behind the API secrets report,
// the home page cards and the details page:
//
//	<p>secret:<secretId>    STRING  JSON secretDoc: every visible field of the
//	                                secret (never the sealed client secret),
//	                                owner {id,name}, status ("enabled" or
//	                                "disabled"), createdAt, updatedAt (last
//	                                change of fields, status or shares),
//	                                lastUsed (last reveal or copy, or null),
//	                                revision (stream revision of the last
//	                                event applied), createdPosition, and
//	                                grants in grant order with principal
//	                                {type,id,name}, canView, canEdit,
//	                                grantedBy {id,name}, grantedAt (of the
//	                                event that set the current permission).
//	                                Times are UTC, from the events' metadata.
//	<p>access:<userId>      ZSET    ids of the secrets the user can reach (as
//	                                owner or by a direct user grant); score =
//	                                commit of the secret's creation position,
//	                                so the set lists secrets in creation order
//	                                and readers walk it backwards (newest
//	                                first).
//	<p>user:<userId>        STRING  JSON userDoc {id,name,email} from
//	                                UserRegistered; names in secret documents
//	                                are resolved from here when an event is
//	                                applied ("" if unknown).
//	<p>checkpoint:secrets   STRING  eventstore.Position.String(): the log is
//	                                applied up to here (the last event, or
//	                                further when the store reported that it
//	                                looked further and found nothing).
//
// It follows the streams "secret-*" and "user-*". Each batch is applied
// exactly once: WATCH the checkpoint, read it with the documents and users
// the batch touches (one round trip), drop the events the checkpoint
// covers, fold the rest in memory, and write every changed key with the new
// checkpoint in one MULTI/EXEC. A crash before EXEC leaves nothing; after
// EXEC, the redelivered batch is dropped by the checkpoint; a concurrent
// writer (a stale second projector) moves the checkpoint and makes EXEC
// fail, and the retry sees what it wrote. With Redis Cluster, use a prefix
// with a hash tag ("{mysafe}:") so that a transaction's keys share a slot.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// SecretsProjection is the name of the secrets projection.
const SecretsProjection = "secrets"

// Status values of a secret.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// keys builds the Redis keys under one prefix.
type keys string

func newKeys(prefix string) keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return keys(prefix)
}

func (k keys) secret(id string) string       { return string(k) + "secret:" + id }
func (k keys) access(userID string) string   { return string(k) + "access:" + userID }
func (k keys) user(id string) string         { return string(k) + "user:" + id }
func (k keys) checkpoint(name string) string { return string(k) + "checkpoint:" + name }

// Person is a user as the screens show one.
type Person struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// PrincipalRef is the grantee of a share as the screens show it.
type PrincipalRef struct {
	Type string `json:"type"` // "user" or "group"
	ID   string `json:"id"`
	Name string `json:"name"`
}

// secretDoc is the stored document of one secret.
type secretDoc struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	URL        string     `json:"url"`
	ClientID   string     `json:"clientId"`
	Identifier string     `json:"identifier"`
	Method     string     `json:"method"`
	Tags       []string   `json:"tags"`
	Notes      string     `json:"notes"`
	Owner      Person     `json:"owner"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"createdAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	LastUsed   *time.Time `json:"lastUsed"`
	Revision   uint64     `json:"revision"`
	// CreatedPosition is the position of SecretCreated; its commit is the
	// score of the secret in every access set.
	CreatedPosition string     `json:"createdPosition"`
	Grants          []grantDoc `json:"grants"`
}

type grantDoc struct {
	Principal PrincipalRef `json:"principal"`
	CanView   bool         `json:"canView"`
	CanEdit   bool         `json:"canEdit"`
	GrantedBy Person       `json:"grantedBy"`
	GrantedAt time.Time    `json:"grantedAt"`
}

type userDoc struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// shared reports whether the secret has any grant.
func (d *secretDoc) shared() bool { return len(d.Grants) > 0 }

// tags never returns nil, so that JSON shows an array.
func (d *secretDoc) tags() []string {
	if d.Tags == nil {
		return []string{}
	}
	return d.Tags
}

// reachers are the users whose access set holds the secret: the owner and
// every user with a direct grant. Group grants reach members once group
// membership is known; until then they only show in the details.
func (d *secretDoc) reachers() map[string]bool {
	r := map[string]bool{d.Owner.ID: true}
	for _, g := range d.Grants {
		if g.Principal.Type == string(domain.PrincipalUser) && g.CanView {
			r[g.Principal.ID] = true
		}
	}
	return r
}

func (d *secretDoc) grantIndex(p domain.Principal) int {
	return slices.IndexFunc(d.Grants, func(g grantDoc) bool {
		return g.Principal.Type == string(p.Type) && g.Principal.ID == p.ID
	})
}

// Secrets is the secrets projection and the source of the report, cards
// and details readers.
type Secrets struct {
	rdb  redis.UniversalClient
	keys keys
	log  *slog.Logger
}

// NewSecrets returns the secrets projection writing under prefix ("" means
// DefaultPrefix).
func NewSecrets(rdb redis.UniversalClient, prefix string, logger *slog.Logger) *Secrets {
	if logger == nil {
		logger = slog.Default()
	}
	return &Secrets{rdb: rdb, keys: newKeys(prefix), log: logger}
}

// Name is SecretsProjection.
func (s *Secrets) Name() string { return SecretsProjection }

// StreamPrefixes are the secret and user streams.
func (s *Secrets) StreamPrefixes() []string {
	return []string{domain.SecretStreamPrefix, domain.UserStreamPrefix}
}

// Checkpoint loads the stored checkpoint; eventstore.Start if none.
func (s *Secrets) Checkpoint(ctx context.Context) (eventstore.Position, error) {
	v, err := s.rdb.Get(ctx, s.keys.checkpoint(SecretsProjection)).Result()
	return parseCheckpoint(v, err)
}

func parseCheckpoint(v string, err error) (eventstore.Position, error) {
	if errors.Is(err, redis.Nil) {
		return eventstore.Start, nil
	}
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("load checkpoint: %w", err)
	}
	return eventstore.ParsePosition(v)
}

// decoded is an event the projection handles, decoded.
type decoded struct {
	rec eventstore.RecordedEvent
	ev  domain.Event
}

// Apply applies a batch exactly once (see the schema comment above) and
// returns the checkpoint stored afterwards. A lost WATCH race is an error:
// the caller retries.
func (s *Secrets) Apply(ctx context.Context, b Batch) (eventstore.Position, error) {
	events, err := s.decode(b.Events)
	if err != nil {
		return eventstore.Position{}, err
	}
	secretIDs, userIDs := touched(events)
	cpKey := s.keys.checkpoint(SecretsProjection)

	var stored eventstore.Position
	err = s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		// One round trip reads the checkpoint and everything the batch may
		// touch, before knowing which events the checkpoint drops: a
		// redelivered batch is rare, a second round trip is not.
		var cpCmd *redis.StringCmd
		var docsCmd, usersCmd *redis.SliceCmd
		_, err := tx.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			cpCmd = pipe.Get(ctx, cpKey)
			if len(secretIDs) > 0 {
				docsCmd = pipe.MGet(ctx, mapKeys(secretIDs, s.keys.secret)...)
			}
			if len(userIDs) > 0 {
				usersCmd = pipe.MGet(ctx, mapKeys(userIDs, s.keys.user)...)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("load: %w", err)
		}
		// A missing checkpoint is redis.Nil, which Pipelined reports
		// first; check the other commands' own errors.
		for _, c := range []*redis.SliceCmd{docsCmd, usersCmd} {
			if c != nil && c.Err() != nil {
				return fmt.Errorf("load: %w", c.Err())
			}
		}
		cp, err := parseCheckpoint(cpCmd.Result())
		if err != nil {
			return err
		}
		stored = cp
		if b.Position.Compare(cp) <= 0 {
			return nil // all of it is applied already: a redelivery
		}
		st := newFold(s.log)
		if err := st.load(secretIDs, docsCmd, userIDs, usersCmd); err != nil {
			return err
		}
		for _, e := range events {
			if e.rec.Position.Compare(cp) > 0 {
				st.apply(e)
			}
		}
		_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			return st.write(ctx, pipe, s.keys, cpKey, b.Position)
		})
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		stored = b.Position
		return nil
	}, cpKey)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("secrets projection: %w", err)
	}
	return stored, nil
}

// decode decodes the events the projection handles and skips the others
// (unknown types, the key streams' events): the log may hold more than
// this projection knows. An event of a known type that does not decode is
// an error, so the projection stops rather than silently diverges.
func (s *Secrets) decode(recs []eventstore.RecordedEvent) ([]decoded, error) {
	out := make([]decoded, 0, len(recs))
	for _, r := range recs {
		if !handled(r.Type) {
			continue
		}
		ev, err := domain.Decode(r.Type, r.Data, r.Metadata)
		if err != nil {
			return nil, fmt.Errorf("secrets projection: event %s at %s in %s: %w", r.ID, r.Position, r.StreamID, err)
		}
		if ev.At.IsZero() {
			ev.At = r.Created
		}
		ev.At = ev.At.UTC() // one zone in every document, whatever the writer's
		out = append(out, decoded{rec: r, ev: ev})
	}
	return out, nil
}

func handled(eventType string) bool {
	switch eventType {
	case "SecretCreated", "SecretUpdated", "SecretDisabled", "SecretEnabled",
		"ShareGranted", "SharePermissionChanged", "ShareRevoked",
		"SecretRevealed", "SecretCopied", "UserRegistered":
		return true
	}
	return false
}

// touched lists the secrets and users a batch reads or writes, in first
// appearance order, without duplicates.
func touched(events []decoded) (secretIDs, userIDs []string) {
	seenS, seenU := map[string]bool{}, map[string]bool{}
	addUser := func(id string) {
		if id != "" && !seenU[id] {
			seenU[id] = true
			userIDs = append(userIDs, id)
		}
	}
	for _, e := range events {
		if id, ok := strings.CutPrefix(e.rec.StreamID, domain.SecretStreamPrefix); ok {
			if !seenS[id] {
				seenS[id] = true
				secretIDs = append(secretIDs, id)
			}
			addUser(e.ev.Actor.ID)
		}
		switch p := e.ev.Payload.(type) {
		case domain.SecretCreated:
			addUser(p.Owner)
		case domain.ShareGranted:
			if p.Principal.Type == domain.PrincipalUser {
				addUser(p.Principal.ID)
			}
		case domain.UserRegistered:
			addUser(p.UserID)
		}
	}
	return secretIDs, userIDs
}

func mapKeys(ids []string, key func(string) string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = key(id)
	}
	return out
}

// fold is a batch being applied in memory.
type fold struct {
	log   *slog.Logger
	docs  map[string]*secretDoc
	users map[string]*userDoc
	// before holds, for each secret loaded or created, who could reach it
	// before the batch: the access sets change by the difference.
	before     map[string]map[string]bool
	dirtyDocs  []string
	dirtyUsers []string
}

func newFold(log *slog.Logger) *fold {
	return &fold{log: log, docs: map[string]*secretDoc{}, users: map[string]*userDoc{}, before: map[string]map[string]bool{}}
}

func (f *fold) load(secretIDs []string, docs *redis.SliceCmd, userIDs []string, users *redis.SliceCmd) error {
	if docs != nil {
		for i, v := range docs.Val() {
			if s, ok := v.(string); ok {
				var d secretDoc
				if err := json.Unmarshal([]byte(s), &d); err != nil {
					return fmt.Errorf("secret %s: stored document: %w", secretIDs[i], err)
				}
				f.docs[secretIDs[i]] = &d
				f.before[secretIDs[i]] = d.reachers()
			}
		}
	}
	if users != nil {
		for i, v := range users.Val() {
			if s, ok := v.(string); ok {
				var u userDoc
				if err := json.Unmarshal([]byte(s), &u); err != nil {
					return fmt.Errorf("user %s: stored record: %w", userIDs[i], err)
				}
				f.users[userIDs[i]] = &u
			}
		}
	}
	return nil
}

func (f *fold) person(id string) Person {
	if u, ok := f.users[id]; ok {
		return Person{ID: id, Name: u.Name}
	}
	return Person{ID: id}
}

func (f *fold) principal(p domain.Principal) PrincipalRef {
	ref := PrincipalRef{Type: string(p.Type), ID: p.ID}
	if p.Type == domain.PrincipalUser {
		ref.Name = f.person(p.ID).Name
	}
	return ref
}

func markDirty(list *[]string, id string) {
	if !slices.Contains(*list, id) {
		*list = append(*list, id)
	}
}

// apply folds one event into the batch's documents.
func (f *fold) apply(e decoded) {
	if p, ok := e.ev.Payload.(domain.UserRegistered); ok {
		f.users[p.UserID] = &userDoc{ID: p.UserID, Name: p.Name, Email: p.Email}
		markDirty(&f.dirtyUsers, p.UserID)
		return
	}
	id, ok := strings.CutPrefix(e.rec.StreamID, domain.SecretStreamPrefix)
	if !ok {
		return
	}
	at := e.ev.At
	d := f.docs[id]
	if c, ok := e.ev.Payload.(domain.SecretCreated); ok {
		if d != nil {
			return // already created: a replayed event
		}
		d = &secretDoc{ID: id, Owner: f.person(c.Owner), Status: StatusEnabled, CreatedAt: at,
			CreatedPosition: e.rec.Position.String(), Grants: []grantDoc{}}
		setFields(d, c.Fields)
		f.docs[id] = d
		f.before[id] = map[string]bool{}
	} else {
		if d == nil {
			f.log.Warn("secrets projection: event for a secret never created; skipped",
				"stream", e.rec.StreamID, "type", e.rec.Type, "position", e.rec.Position.String())
			return
		}
		if e.rec.Revision <= d.Revision {
			return // already applied (the document is newer than the checkpoint)
		}
	}
	d.Revision = e.rec.Revision
	changed := true // whether the event changes the secret itself (updatedAt)
	switch p := e.ev.Payload.(type) {
	case domain.SecretUpdated:
		setFields(d, p.Fields)
	case domain.SecretDisabled:
		d.Status = StatusDisabled
	case domain.SecretEnabled:
		d.Status = StatusEnabled
	case domain.ShareGranted:
		g := grantDoc{Principal: f.principal(p.Principal), GrantedBy: f.person(e.ev.Actor.ID), GrantedAt: at}
		g.CanView, g.CanEdit = p.Permission.CanView, p.Permission.CanEdit
		if i := d.grantIndex(p.Principal); i >= 0 {
			d.Grants[i] = g
		} else {
			d.Grants = append(d.Grants, g)
		}
	case domain.SharePermissionChanged:
		if i := d.grantIndex(p.Principal); i >= 0 {
			g := &d.Grants[i]
			g.CanView, g.CanEdit = p.After.CanView, p.After.CanEdit
			g.GrantedBy, g.GrantedAt = f.person(e.ev.Actor.ID), at
		}
	case domain.ShareRevoked:
		if i := d.grantIndex(p.Principal); i >= 0 {
			d.Grants = slices.Delete(d.Grants, i, i+1)
		}
	case domain.SecretRevealed, domain.SecretCopied:
		t := at
		d.LastUsed = &t
		changed = false
	}
	if changed {
		d.UpdatedAt = at
	}
	markDirty(&f.dirtyDocs, id)
}

func setFields(d *secretDoc, f domain.SecretFields) {
	d.Name, d.URL, d.ClientID, d.Identifier, d.Method, d.Notes = f.Name, f.URL, f.ClientID, f.Identifier, f.Method, f.Notes
	d.Tags = slices.Clone(f.Tags)
}

// write queues every change of the batch and the new checkpoint.
func (f *fold) write(ctx context.Context, pipe redis.Pipeliner, k keys, cpKey string, pos eventstore.Position) error {
	for _, id := range f.dirtyUsers {
		b, err := json.Marshal(f.users[id])
		if err != nil {
			return err
		}
		pipe.Set(ctx, k.user(id), b, 0)
	}
	for _, id := range f.dirtyDocs {
		d := f.docs[id]
		b, err := json.Marshal(d)
		if err != nil {
			return err
		}
		pipe.Set(ctx, k.secret(id), b, 0)
		created, err := eventstore.ParsePosition(d.CreatedPosition)
		if err != nil {
			return fmt.Errorf("secret %s: %w", id, err)
		}
		score := float64(created.Commit)
		before, after := f.before[id], d.reachers()
		for u := range after {
			if !before[u] {
				pipe.ZAdd(ctx, k.access(u), redis.Z{Score: score, Member: id})
			}
		}
		for u := range before {
			if !after[u] {
				pipe.ZRem(ctx, k.access(u), id)
			}
		}
	}
	pipe.Set(ctx, cpKey, pos.String(), 0)
	return nil
}

// Reader answers the screens' queries from the secrets projection. It only
// reads: the HTTP layer decides who may ask what.
type Reader struct {
	rdb  redis.UniversalClient
	keys keys
}

// NewReader returns a Reader of the read models under prefix ("" means
// DefaultPrefix).
func NewReader(rdb redis.UniversalClient, prefix string) *Reader {
	return &Reader{rdb: rdb, keys: newKeys(prefix)}
}

// mgetChunk bounds the keys of one MGET so that a large access set does
// not make one huge reply; the chunks still go in one round trip.
const mgetChunk = 500

// docs loads the documents of these secrets in one round trip, in order,
// leaving out any that are missing (an id read from an access set just
// before its secret's document changed cannot be missing, as both are
// written in one transaction, but a rebuild in progress may lag).
func (r *Reader) docs(ctx context.Context, ids []string) ([]*secretDoc, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var cmds []*redis.SliceCmd
	_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for chunk := range slices.Chunk(ids, mgetChunk) {
			cmds = append(cmds, pipe.MGet(ctx, mapKeys(chunk, r.keys.secret)...))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load secrets: %w", err)
	}
	out := make([]*secretDoc, 0, len(ids))
	i := 0
	for _, c := range cmds {
		for _, v := range c.Val() {
			id := ids[i]
			i++
			s, ok := v.(string)
			if !ok {
				continue
			}
			var d secretDoc
			if err := json.Unmarshal([]byte(s), &d); err != nil {
				return nil, fmt.Errorf("secret %s: stored document: %w", id, err)
			}
			out = append(out, &d)
		}
	}
	return out, nil
}

// accessible lists the ids of every secret the user can reach, newest
// first.
func (r *Reader) accessible(ctx context.Context, userID string) ([]string, error) {
	ids, err := r.rdb.ZRevRange(ctx, r.keys.access(userID), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list secrets of %s: %w", userID, err)
	}
	return ids, nil
}
