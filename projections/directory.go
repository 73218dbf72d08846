package projections

// The directory: the share dialog's search box finds users by name,
// username or e-mail and groups by name, by prefix or substring, ignoring
// case. The secrets projection (secrets.go) keeps its index with the user
// and group documents, in the same transaction:
//
//	<p>dir    ZSET  every score 0, so members sort by bytes; one member per
//	                suffix of each lowercased term of each principal:
//	                "<suffix>\x00<type>\x00<id>". A substring of a term is a
//	                prefix of one of its suffixes, so one ZRANGEBYLEX finds
//	                every principal with a term containing the query.
//
// Terms are capped at MaxTermRunes runes, so a principal costs at most a
// few hundred short members (about 3 KB for a user with a long name and
// e-mail address).

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
)

// Directory limits.
const (
	// MaxTermRunes bounds the indexed length of a name, username or e-mail.
	MaxTermRunes = 64
	// DefaultDirectoryLimit and MaxDirectoryLimit bound a search's answer.
	DefaultDirectoryLimit = 20
	MaxDirectoryLimit     = 100
	// directoryScan bounds the index members one search reads; a very
	// short query may match more, of which the first in byte order count.
	directoryScan = 1000
)

// dirKey names a principal in index members: "<type>\x00<id>".
func dirKey(t domain.PrincipalType, id string) string { return string(t) + "\x00" + id }

// normalizeTerm is a term as the index keeps it and a query is matched.
func normalizeTerm(s string) string {
	s = strings.ToLower(strings.TrimSpace(strings.ReplaceAll(s, "\x00", "")))
	if utf8.RuneCountInString(s) > MaxTermRunes {
		s = string([]rune(s)[:MaxTermRunes])
	}
	return s
}

// directoryEntries are the index members of a principal's terms.
func directoryEntries(key string, terms ...string) map[string]bool {
	out := map[string]bool{}
	for _, t := range terms {
		t = normalizeTerm(t)
		for i := range t {
			if utf8.RuneStart(t[i]) {
				out[t[i:]+"\x00"+key] = true
			}
		}
	}
	return out
}

func userTerms(u *userDoc) map[string]bool {
	return directoryEntries(dirKey(domain.PrincipalUser, u.ID), u.Name, u.username(), u.Email)
}

// directoryDiff gathers the index members to add and remove.
type directoryDiff struct{ adds, rems []string }

func newDirectoryDiff() *directoryDiff { return &directoryDiff{} }

func (d *directoryDiff) change(before, after map[string]bool) {
	for m := range after {
		if !before[m] {
			d.adds = append(d.adds, m)
		}
	}
	for m := range before {
		if !after[m] {
			d.rems = append(d.rems, m)
		}
	}
}

func (d *directoryDiff) write(ctx context.Context, pipe redis.Pipeliner, key string) {
	if len(d.rems) > 0 {
		members := make([]any, len(d.rems))
		for i, m := range d.rems {
			members[i] = m
		}
		pipe.ZRem(ctx, key, members...)
	}
	if len(d.adds) > 0 {
		zs := make([]redis.Z, len(d.adds))
		for i, m := range d.adds {
			zs[i] = redis.Z{Member: m}
		}
		pipe.ZAdd(ctx, key, zs...)
	}
}

// DirectoryQuery is a search of the directory.
type DirectoryQuery struct {
	// Q is matched, ignoring case, as a prefix or substring of a user's
	// name, username or e-mail, or of a group's name.
	Q string
	// Caller is who searches: groups show only when the caller may see
	// them (their owner, their members if allowed, admins).
	Caller string
	Admin  bool
	// Limit bounds the answer; 0 means DefaultDirectoryLimit.
	Limit int
}

// PrincipalHit is one principal found.
type PrincipalHit struct {
	Type     string `json:"type"` // "user" or "group"
	ID       string `json:"id"`
	Name     string `json:"name"`
	Username string `json:"username,omitempty"`
	Email    string `json:"email,omitempty"`
	// MemberCount is set for groups.
	MemberCount *int   `json:"memberCount,omitempty"`
	Status      string `json:"status,omitempty"`
	rank        int
	terms       []string
}

// Principals searches the directory: best matches first (a term equal to
// the query, then starting with it, then a word of a term starting with
// it, then containing it), then by name.
func (r *Reader) Principals(ctx context.Context, q DirectoryQuery) ([]PrincipalHit, error) {
	query := normalizeTerm(q.Q)
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultDirectoryLimit
	}
	limit = min(limit, MaxDirectoryLimit)
	if query == "" {
		return []PrincipalHit{}, nil
	}
	members, err := r.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: r.keys.directory(), ByLex: true,
		Start: "[" + query, Stop: "(" + query + "\xff", Count: directoryScan}).Result()
	if err != nil {
		return nil, fmt.Errorf("directory search: %w", err)
	}
	var userIDs, groupIDs idList
	for _, m := range members {
		parts := strings.SplitN(m, "\x00", 3)
		if len(parts) != 3 {
			continue
		}
		switch domain.PrincipalType(parts[1]) {
		case domain.PrincipalUser:
			userIDs.add(parts[2])
		case domain.PrincipalGroup:
			groupIDs.add(parts[2])
		}
	}
	users := map[string]*userDoc{}
	if err := readDocs(ctx, r.rdb, userIDs.list, r.keys.user, users, "user"); err != nil {
		return nil, err
	}
	groups, err := r.groupDocs(ctx, groupIDs.list)
	if err != nil {
		return nil, err
	}
	hits := []PrincipalHit{}
	for _, id := range userIDs.list {
		if u := users[id]; u != nil {
			hits = append(hits, PrincipalHit{Type: string(domain.PrincipalUser), ID: id, Name: u.Name, Username: u.username(),
				Email: u.Email, terms: []string{u.Name, u.username(), u.Email}})
		}
	}
	for _, g := range groups {
		if g.visibleTo(q.Caller, q.Admin) {
			n := len(g.Members)
			hits = append(hits, PrincipalHit{Type: string(domain.PrincipalGroup), ID: g.ID, Name: g.Name, MemberCount: &n,
				Status: g.Status, terms: []string{g.Name}})
		}
	}
	for i := range hits {
		hits[i].rank = matchRank(query, hits[i].terms)
	}
	slices.SortFunc(hits, func(a, b PrincipalHit) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return cmpFold(a.Name, b.Name, a.Type+a.ID, b.Type+b.ID)
	})
	return hits[:min(len(hits), limit)], nil
}

// matchRank is how well the query matches the best of the terms: 0 equal,
// 1 prefix, 2 prefix of a word, 3 substring, 4 no match (a term changed
// since it was indexed).
func matchRank(query string, terms []string) int {
	best := 4
	for _, t := range terms {
		t = normalizeTerm(t)
		i := strings.Index(t, query)
		switch {
		case i < 0:
		case t == query:
			best = min(best, 0)
		case i == 0:
			best = min(best, 1)
		case wordStart(t, query):
			best = min(best, 2)
		default:
			best = min(best, 3)
		}
	}
	return best
}

// wordStart reports whether the query starts some word of the term.
func wordStart(term, query string) bool {
	for _, w := range strings.FieldsFunc(term, func(r rune) bool { return strings.ContainsRune(" .@-_", r) }) {
		if strings.HasPrefix(w, query) {
			return true
		}
	}
	return false
}
