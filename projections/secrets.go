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
//	                                owner, by a direct user grant, or as an
//	                                effective member of a group granted on
//	                                the secret); score = commit of the
//	                                secret's creation position, so the set
//	                                lists secrets in creation order and
//	                                readers walk it backwards (newest first).
//	<p>user:<userId>        STRING  JSON userDoc {id,name,username,email}
//	                                from UserRegistered and UserUpdated;
//	                                names in secret documents are resolved
//	                                from here when an event is applied ("" if
//	                                unknown), and a UserUpdated rewrites them
//	                                in every secret of the user's access set.
//	<p>group:<groupId>      STRING  JSON groupDoc (groups.go).
//	<p>groupsecrets:<gid>   SET     ids of the secrets granted to the group:
//	                                when its effective members change, these
//	                                are the secrets whose reach is re-examined.
//	<p>groupsof:<userId>    SET     ids of the groups the user owns or is
//	                                listed in (the groups list).
//	<p>groupsever:<userId>  SET     ids of the groups the user ever owned or
//	                                was listed in: where the access-at-an-
//	                                instant queries look for group reach.
//	<p>dir                  ZSET    the directory's search index
//	                                (directory.go).
//	<p>checkpoint:secrets   STRING  eventstore.Position.String(): the log is
//	                                applied up to here (the last event, or
//	                                further when the store reported that it
//	                                looked further and found nothing).
//
// It applies the events of the streams "secret-*", "user-*" and "group-*"
// (and reads all others, see StreamPrefixes). Each batch is applied exactly
// once: WATCH the checkpoint, read it with the documents,
// users and groups the batch touches (one round trip; up to two more when a
// group's membership or a user's name fans out over their secrets, or the
// secrets name more groups), drop the events the checkpoint covers, fold
// the rest in memory, and write every changed key with the new checkpoint
// in one MULTI/EXEC. A crash before EXEC leaves nothing; after
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

// Keys of groups and the directory (groups.go, directory.go).
func (k keys) group(id string) string          { return string(k) + "group:" + id }
func (k keys) groupSecrets(id string) string   { return string(k) + "groupsecrets:" + id }
func (k keys) groupsOf(userID string) string   { return string(k) + "groupsof:" + userID }
func (k keys) groupsEver(userID string) string { return string(k) + "groupsever:" + userID }
func (k keys) directory() string               { return string(k) + "dir" }

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
	ID       string `json:"id"`
	Name     string `json:"name"`
	Username string `json:"username,omitempty"` // empty in documents written before usernames: the ID
	Email    string `json:"email"`
}

// username is the user's username, their ID unless imported otherwise.
func (u *userDoc) username() string {
	if u.Username == "" {
		return u.ID
	}
	return u.Username
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

// reachers are the users whose access set holds the secret: the owner,
// every user with a direct grant, and the effective members of every group
// granted on it (groups maps group IDs to their documents).
func (d *secretDoc) reachers(groups map[string]*groupDoc) map[string]bool {
	r := map[string]bool{d.Owner.ID: true}
	for _, g := range d.Grants {
		switch {
		case !g.CanView:
		case g.Principal.Type == string(domain.PrincipalUser):
			r[g.Principal.ID] = true
		case g.Principal.Type == string(domain.PrincipalGroup):
			if gd := groups[g.Principal.ID]; gd != nil {
				for _, m := range gd.effectiveMembers() {
					r[m] = true
				}
			}
		}
	}
	return r
}

// groupIDs are the groups granted on the secret.
func (d *secretDoc) groupIDs() map[string]bool {
	out := map[string]bool{}
	for _, g := range d.Grants {
		if g.Principal.Type == string(domain.PrincipalGroup) {
			out[g.Principal.ID] = true
		}
	}
	return out
}

func (d *secretDoc) grantIndex(p domain.Principal) int {
	return slices.IndexFunc(d.Grants, func(g grantDoc) bool {
		return g.Principal.Type == string(p.Type) && g.Principal.ID == p.ID
	})
}

// redisProjection is what every projection here shares: its name, its
// Redis and key prefix, its logger, and its checkpoint key.
type redisProjection struct {
	name string
	rdb  redis.UniversalClient
	keys keys
	log  *slog.Logger
}

func newRedisProjection(name string, rdb redis.UniversalClient, prefix string, logger *slog.Logger) redisProjection {
	if logger == nil {
		logger = slog.Default()
	}
	return redisProjection{name: name, rdb: rdb, keys: newKeys(prefix), log: logger}
}

// Name is the projection's name, which also names its checkpoint key.
func (p *redisProjection) Name() string { return p.name }

// Checkpoint loads the stored checkpoint; eventstore.Start if none.
func (p *redisProjection) Checkpoint(ctx context.Context) (eventstore.Position, error) {
	return parseCheckpoint(p.rdb.Get(ctx, p.keys.checkpoint(p.name)).Result())
}

// Secrets is the secrets projection and the source of the report, cards
// and details readers.
type Secrets struct{ redisProjection }

// NewSecrets returns the secrets projection writing under prefix ("" means
// DefaultPrefix).
func NewSecrets(rdb redis.UniversalClient, prefix string, logger *slog.Logger) *Secrets {
	return &Secrets{newRedisProjection(SecretsProjection, rdb, prefix, logger)}
}

// StreamPrefixes is every stream, though only secret, user and group
// events change this projection: EventStoreDB sends a filtered
// subscription checkpoints only every so many events, so a projection that saw no event of a command
// could not tell that it has passed the command's position, and a query
// waiting for that position would wait in vain. Batches without an event
// for it cost no Redis round trip (see Apply).
func (s *Secrets) StreamPrefixes() []string { return nil }

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
	if len(events) == 0 {
		// Nothing here for this projection: acknowledged without a write.
		// The stored checkpoint stays behind; after a restart these
		// events are read again and change nothing again.
		return b.Position, nil
	}
	pl := planBatch(events)
	cpKey := s.keys.checkpoint(SecretsProjection)

	var stored eventstore.Position
	err = s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		// The first round trip reads the checkpoint and everything the
		// batch may touch, before knowing which events the checkpoint
		// drops: a redelivered batch is rare, a second round trip is not.
		st := newFold(s.log)
		cp, err := st.load(ctx, tx, s.keys, cpKey, pl)
		if err != nil {
			return err
		}
		stored = cp
		if b.Position.Compare(cp) <= 0 {
			return nil // all of it is applied already: a redelivery
		}
		for _, e := range events {
			if e.rec.Position.Compare(cp) > 0 {
				st.apply(e)
			}
		}
		st.refreshNames()
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
		"SecretRevealed", "SecretCopied", "UserRegistered", "UserUpdated",
		"GroupCreated", "GroupUpdated", "GroupMemberAdded", "GroupMemberRemoved", "GroupDisabled", "GroupEnabled":
		return true
	}
	return false
}

// plan is what a batch reads before folding, each list in first
// appearance order without duplicates.
type plan struct {
	secretIDs, userIDs, groupIDs idList
	// fanGroups are the groups whose effective members may change: every
	// secret granted to them is re-examined.
	fanGroups idList
	// renamed are the users whose names may change: every secret of their
	// access set is rewritten with the new name.
	renamed idList
}

// idList is a list of unique ids in first appearance order.
type idList struct {
	list []string
	seen map[string]bool
}

func (l *idList) add(id string) {
	if id == "" || l.seen[id] {
		return
	}
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	l.seen[id] = true
	l.list = append(l.list, id)
}

func planBatch(events []decoded) plan {
	var pl plan
	addPrincipal := func(p domain.Principal) {
		if p.Type == domain.PrincipalGroup {
			pl.groupIDs.add(p.ID)
		} else {
			pl.userIDs.add(p.ID)
		}
	}
	for _, e := range events {
		if id, ok := strings.CutPrefix(e.rec.StreamID, domain.SecretStreamPrefix); ok {
			pl.secretIDs.add(id)
			pl.userIDs.add(e.ev.Actor.ID)
		}
		if id, ok := strings.CutPrefix(e.rec.StreamID, domain.GroupStreamPrefix); ok {
			pl.groupIDs.add(id)
			switch e.ev.Payload.(type) {
			case domain.GroupMemberAdded, domain.GroupMemberRemoved, domain.GroupDisabled, domain.GroupEnabled:
				pl.fanGroups.add(id)
			}
		}
		switch p := e.ev.Payload.(type) {
		case domain.SecretCreated:
			pl.userIDs.add(p.Owner)
		case domain.ShareGranted:
			addPrincipal(p.Principal)
		case domain.SharePermissionChanged:
			addPrincipal(p.Principal)
		case domain.ShareRevoked:
			addPrincipal(p.Principal)
		case domain.UserRegistered:
			pl.userIDs.add(p.UserID)
		case domain.UserUpdated:
			pl.userIDs.add(p.UserID)
			pl.renamed.add(p.UserID)
		}
	}
	return pl
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
	log    *slog.Logger
	docs   map[string]*secretDoc
	users  map[string]*userDoc
	groups map[string]*groupDoc
	// The state before the batch, for what is written as differences: who
	// reached each secret and which groups it was granted to, who was
	// involved in each group, each principal's directory entries.
	beforeReach    map[string]map[string]bool
	beforeGroups   map[string]map[string]bool
	beforeInvolved map[string]map[string]bool
	beforeTerms    map[string]map[string]bool // by dirKey
	renamed        map[string]bool
	// joined are, by group, the users who became its owner or a member in
	// the batch, even if they left again: the groupsever index keeps them.
	joined      map[string]map[string]bool
	dirtyDocs   []string
	dirtyUsers  []string
	dirtyGroups []string
}

func newFold(log *slog.Logger) *fold {
	return &fold{log: log, docs: map[string]*secretDoc{}, users: map[string]*userDoc{}, groups: map[string]*groupDoc{},
		beforeReach: map[string]map[string]bool{}, beforeGroups: map[string]map[string]bool{},
		beforeInvolved: map[string]map[string]bool{}, beforeTerms: map[string]map[string]bool{}, renamed: map[string]bool{}, joined: map[string]map[string]bool{}}
}

// load reads the checkpoint and what the plan names, then what those name
// in turn: the secrets of groups whose members change and of users whose
// names change, and the groups granted on any secret read. It returns the
// checkpoint; when the batch is already applied it stops there.
func (f *fold) load(ctx context.Context, tx *redis.Tx, k keys, cpKey string, pl plan) (eventstore.Position, error) {
	var cpCmd *redis.StringCmd
	var docsCmds, usersCmds, groupsCmds []*redis.SliceCmd
	var fanCmds []*redis.StringSliceCmd
	_, err := tx.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		cpCmd = pipe.Get(ctx, cpKey)
		docsCmds = mget(ctx, pipe, pl.secretIDs.list, k.secret)
		usersCmds = mget(ctx, pipe, pl.userIDs.list, k.user)
		groupsCmds = mget(ctx, pipe, pl.groupIDs.list, k.group)
		for _, g := range pl.fanGroups.list {
			fanCmds = append(fanCmds, pipe.SMembers(ctx, k.groupSecrets(g)))
		}
		for _, u := range pl.renamed.list {
			fanCmds = append(fanCmds, pipe.ZRange(ctx, k.access(u), 0, -1))
		}
		return nil
	})
	// A missing checkpoint is redis.Nil, which Pipelined reports first;
	// the other commands' own errors are checked where they are read.
	if err != nil && !errors.Is(err, redis.Nil) {
		return eventstore.Position{}, fmt.Errorf("load: %w", err)
	}
	cp, err := parseCheckpoint(cpCmd.Result())
	if err != nil {
		return cp, err
	}
	if err := decodeInto(pl.secretIDs.list, docsCmds, f.docs, "secret"); err != nil {
		return cp, err
	}
	if err := decodeInto(pl.userIDs.list, usersCmds, f.users, "user"); err != nil {
		return cp, err
	}
	if err := decodeInto(pl.groupIDs.list, groupsCmds, f.groups, "group"); err != nil {
		return cp, err
	}
	for _, u := range pl.renamed.list {
		f.renamed[u] = true
	}

	// Fan-out: the secrets whose reach or names the batch may change.
	var more idList
	for _, c := range fanCmds {
		vals, err := c.Result()
		if err != nil {
			return cp, fmt.Errorf("load: %w", err)
		}
		for _, id := range vals {
			if _, ok := f.docs[id]; !ok {
				more.add(id)
			}
		}
	}
	if err := loadMore(ctx, tx, more.list, k.secret, f.docs, "secret"); err != nil {
		return cp, err
	}
	// The groups granted on every secret read, to know who reaches it.
	var groups idList
	for _, d := range f.docs {
		for g := range d.groupIDs() {
			if _, ok := f.groups[g]; !ok {
				groups.add(g)
			}
		}
	}
	if err := loadMore(ctx, tx, groups.list, k.group, f.groups, "group"); err != nil {
		return cp, err
	}

	for id, d := range f.docs {
		f.beforeReach[id], f.beforeGroups[id] = d.reachers(f.groups), d.groupIDs()
	}
	for id, g := range f.groups {
		f.beforeInvolved[id], f.beforeTerms[dirKey(domain.PrincipalGroup, id)] = g.involved(), g.terms()
	}
	for id, u := range f.users {
		f.beforeTerms[dirKey(domain.PrincipalUser, id)] = userTerms(u)
	}
	return cp, nil
}

// loadMore reads more documents of one kind in one round trip.
func loadMore[T any](ctx context.Context, tx *redis.Tx, ids []string, key func(string) string, into map[string]*T, what string) error {
	if len(ids) == 0 {
		return nil
	}
	var cmds []*redis.SliceCmd
	_, err := tx.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		cmds = mget(ctx, pipe, ids, key)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	return decodeInto(ids, cmds, into, what)
}

// mget queues MGETs of the keys of ids, in chunks.
func mget(ctx context.Context, pipe redis.Pipeliner, ids []string, key func(string) string) []*redis.SliceCmd {
	var cmds []*redis.SliceCmd
	for chunk := range slices.Chunk(ids, mgetChunk) {
		cmds = append(cmds, pipe.MGet(ctx, mapKeys(chunk, key)...))
	}
	return cmds
}

// decodeInto decodes the JSON documents MGET read for ids, skipping the
// missing ones.
func decodeInto[T any](ids []string, cmds []*redis.SliceCmd, into map[string]*T, what string) error {
	i := 0
	for _, c := range cmds {
		vals, err := c.Result()
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		for _, v := range vals {
			id := ids[i]
			i++
			s, ok := v.(string)
			if !ok {
				continue
			}
			doc := new(T)
			if err := decodeDoc([]byte(s), doc); err != nil {
				return fmt.Errorf("%s %s: stored document: %w", what, id, err)
			}
			into[id] = doc
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
	switch p.Type {
	case domain.PrincipalUser:
		ref.Name = f.person(p.ID).Name
	case domain.PrincipalGroup:
		if g := f.groups[p.ID]; g != nil {
			ref.Name = g.Name
		}
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
	switch p := e.ev.Payload.(type) {
	case domain.UserRegistered:
		f.users[p.UserID] = &userDoc{ID: p.UserID, Name: p.Name, Email: p.Email}
		markDirty(&f.dirtyUsers, p.UserID)
		return
	case domain.UserUpdated:
		f.users[p.UserID] = &userDoc{ID: p.UserID, Name: p.Name, Username: p.Username, Email: p.Email}
		markDirty(&f.dirtyUsers, p.UserID)
		return
	}
	if id, ok := strings.CutPrefix(e.rec.StreamID, domain.GroupStreamPrefix); ok {
		f.applyGroup(id, e)
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
		f.beforeReach[id], f.beforeGroups[id] = map[string]bool{}, map[string]bool{}
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

// refreshNames rewrites the names of renamed users wherever they appear in
// the secrets read: as owner, grantee or granter.
func (f *fold) refreshNames() {
	if len(f.renamed) == 0 {
		return
	}
	rename := func(p *Person) bool {
		if u := f.users[p.ID]; f.renamed[p.ID] && u != nil && p.Name != u.Name {
			p.Name = u.Name
			return true
		}
		return false
	}
	for id, d := range f.docs {
		changed := rename(&d.Owner)
		for i := range d.Grants {
			g := &d.Grants[i]
			if g.Principal.Type == string(domain.PrincipalUser) {
				p := Person{ID: g.Principal.ID, Name: g.Principal.Name}
				if rename(&p) {
					g.Principal.Name, changed = p.Name, true
				}
			}
			changed = rename(&g.GrantedBy) || changed
		}
		if changed {
			markDirty(&f.dirtyDocs, id)
		}
	}
}

func setFields(d *secretDoc, f domain.SecretFields) {
	d.Name, d.URL, d.ClientID, d.Identifier, d.Method, d.Notes = f.Name, f.URL, f.ClientID, f.Identifier, f.Method, f.Notes
	d.Tags = slices.Clone(f.Tags)
}

// write queues every change of the batch and the new checkpoint. Access
// sets, group indexes and the directory change by the difference between
// before and after the batch, one command per key.
func (f *fold) write(ctx context.Context, pipe redis.Pipeliner, k keys, cpKey string, pos eventstore.Position) error {
	dir := newDirectoryDiff()
	for _, id := range f.dirtyUsers {
		u := f.users[id]
		b, err := json.Marshal(u)
		if err != nil {
			return err
		}
		pipe.Set(ctx, k.user(id), b, 0)
		dir.change(f.beforeTerms[dirKey(domain.PrincipalUser, id)], userTerms(u))
	}
	sets := newSetDiff()
	for _, id := range f.dirtyGroups {
		g := f.groups[id]
		b, err := json.Marshal(g)
		if err != nil {
			return err
		}
		pipe.Set(ctx, k.group(id), b, 0)
		pipe.SAdd(ctx, k.allGroups(), id)
		dir.change(f.beforeTerms[dirKey(domain.PrincipalGroup, id)], g.terms())
		sets.change(f.beforeInvolved[id], g.involved(), k.groupsOf, id)
		sets.change(nil, f.joined[id], k.groupsEver, id)
	}
	for _, id := range f.dirtyDocs {
		b, err := json.Marshal(f.docs[id])
		if err != nil {
			return err
		}
		pipe.Set(ctx, k.secret(id), b, 0)
	}
	// Reach is re-examined for every secret read, not only the changed
	// ones: a group's new or departed member changes who reaches secrets
	// whose documents stay as they were.
	adds, rems := map[string][]redis.Z{}, map[string][]any{}
	for id, d := range f.docs {
		created, err := eventstore.ParsePosition(d.CreatedPosition)
		if err != nil {
			return fmt.Errorf("secret %s: %w", id, err)
		}
		before, after := f.beforeReach[id], d.reachers(f.groups)
		for u := range after {
			if !before[u] {
				adds[u] = append(adds[u], redis.Z{Score: float64(created.Commit), Member: id})
			}
		}
		for u := range before {
			if !after[u] {
				rems[u] = append(rems[u], id)
			}
		}
		sets.change(f.beforeGroups[id], d.groupIDs(), k.groupSecrets, id)
	}
	for u, zs := range adds {
		pipe.ZAdd(ctx, k.access(u), zs...)
	}
	for u, members := range rems {
		pipe.ZRem(ctx, k.access(u), members...)
	}
	sets.write(ctx, pipe)
	dir.write(ctx, pipe, k.directory())
	pipe.Set(ctx, cpKey, pos.String(), 0)
	return nil
}

// setDiff gathers SADD and SREM per key.
type setDiff struct{ adds, rems map[string][]any }

func newSetDiff() *setDiff { return &setDiff{adds: map[string][]any{}, rems: map[string][]any{}} }

// change records that member left the sets of the owners in before but
// not after, and joined those in after but not before.
func (s *setDiff) change(before, after map[string]bool, key func(string) string, member string) {
	for o := range after {
		if !before[o] {
			s.adds[key(o)] = append(s.adds[key(o)], member)
		}
	}
	for o := range before {
		if !after[o] {
			s.rems[key(o)] = append(s.rems[key(o)], member)
		}
	}
}

func (s *setDiff) write(ctx context.Context, pipe redis.Pipeliner) {
	for key, members := range s.adds {
		pipe.SAdd(ctx, key, members...)
	}
	for key, members := range s.rems {
		pipe.SRem(ctx, key, members...)
	}
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
			if err := decodeDoc([]byte(s), &d); err != nil {
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
