package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/mysafe/mysafe/eventstore"
)

// pageSize is the report page the screens ask for (and the lag scenario
// reads).
const pageSize = 30

// world is the seeded data.
type world struct {
	// users own the secrets; grantees own none and are only shared with,
	// so that an owner's report lists exactly their own secrets and the
	// newest of them stay on its first page.
	users, grantees []user
	secrets         []secret
	// pageOne lists the secrets on their owner's first report page (the
	// newest pageSize), which the lag scenario toggles and then finds there.
	pageOne []int
	// last is the position of the last event the bench caused so far.
	lastMu sync.Mutex
	last   eventstore.Position
}

type user struct {
	id, token string
}

type secret struct {
	id      string
	owner   int // index in users
	grantee int // index in grantees: the user the share dialog toggles
	pos     eventstore.Position
	// The share dialog's two bodies: share with the grantee, share with no one.
	share, unshare []byte
}

// saw records a position the service answered with.
func (w *world) saw(pos string) {
	p, err := eventstore.ParsePosition(pos)
	if err != nil {
		return
	}
	w.lastMu.Lock()
	if p.Compare(w.last) > 0 {
		w.last = p
	}
	w.lastMu.Unlock()
}

func (w *world) lastPosition() eventstore.Position {
	w.lastMu.Lock()
	defer w.lastMu.Unlock()
	return w.last
}

// seed makes the users known to the service (a user is registered by their
// first request), creates the secrets through the API, and waits until the
// read models show them.
func (b *bencher) seed(ctx context.Context) error {
	w := &world{}
	if b.env.Mint != nil {
		mint := func(id, name string) (user, error) {
			token, err := b.env.Mint(id, name)
			return user{id: id, token: token}, err
		}
		for i := range b.cfg.Users {
			u, err := mint(fmt.Sprintf("bench-u%03d", i), fmt.Sprintf("Bench User %d", i))
			if err != nil {
				return err
			}
			w.users = append(w.users, u)
		}
		for i := range max(2, b.cfg.Users/5) {
			g, err := mint(fmt.Sprintf("bench-g%03d", i), fmt.Sprintf("Bench Grantee %d", i))
			if err != nil {
				return err
			}
			w.grantees = append(w.grantees, g)
		}
	} else {
		// --target: the last token is the grantee, the others own secrets.
		for _, token := range b.env.Tokens {
			id, err := tokenSubject(token)
			if err != nil {
				return err
			}
			w.users = append(w.users, user{id: id, token: token})
		}
		if len(w.users) < 2 {
			return errors.New("--target needs at least two --token values: secrets are shared from one user with another")
		}
		w.users, w.grantees = w.users[:len(w.users)-1], w.users[len(w.users)-1:]
	}
	b.w = w
	start := time.Now()
	b.p.say("bench: seeding %d users with %d secrets each, %d grantees", len(w.users), b.cfg.SecretsPerUser, len(w.grantees))
	everyone := append(slices.Clone(w.users), w.grantees...)
	err := b.parallel(ctx, len(everyone), func(ctx context.Context, i int) error {
		return b.c.call(ctx, http.MethodGet, "/api/v1/home/cards", everyone[i].token, nil, nil, http.StatusOK, nil)
	})
	if err != nil {
		return err
	}

	n := len(w.users) * b.cfg.SecretsPerUser
	w.secrets = make([]secret, n)
	err = b.parallel(ctx, n, func(ctx context.Context, i int) error {
		s, err := b.createSecret(ctx, i)
		w.secrets[i] = s
		return err
	})
	if err != nil {
		return err
	}
	// The report lists a user's secrets newest first, by creation position.
	byOwner := make([][]int, len(w.users))
	for i, s := range w.secrets {
		byOwner[s.owner] = append(byOwner[s.owner], i)
	}
	for _, ids := range byOwner {
		slices.SortFunc(ids, func(a, c int) int { return -w.secrets[a].pos.Compare(w.secrets[c].pos) })
		w.pageOne = append(w.pageOne, ids[:min(pageSize, len(ids))]...)
	}
	slices.SortFunc(w.pageOne, cmp.Compare) // spread owners over the lag's round robin
	if err := b.caughtUp(ctx); err != nil {
		return err
	}
	b.p.say("bench: seeded %d secrets in %s", n, time.Since(start).Round(time.Millisecond))
	return nil
}

// caughtUp waits until the read models have applied everything the bench
// caused so far.
func (b *bencher) caughtUp(ctx context.Context) error {
	h := http.Header{"X-Mysafe-Min-Position": {b.w.lastPosition().String()}}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := b.c.call(ctx, http.MethodGet, "/api/v1/secrets?pageSize=1", b.w.users[0].token, nil, h, http.StatusOK, nil)
		var se *statusError
		if err == nil || !errors.As(err, &se) || se.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return err
		}
	}
}

// parallel runs fn for 0..n-1 on cfg.Clients workers and returns the first
// error.
func (b *bencher) parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(b.cfg.Clients, n) {
		wg.Go(func() {
			for i := range jobs {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}
