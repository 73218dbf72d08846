package projections

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// startRelay runs a relay on a Redis client of its own, as serve does.
func startRelay(t *testing.T, store eventstore.Store, rdb redis.UniversalClient, prefix string) (*Relay, func()) {
	t.Helper()
	own := redis.NewClient(rdb.(*redis.Client).Options())
	r, err := NewRelay(RelayConfig{Store: store, Redis: own, Prefix: prefix, Logger: quietLogger(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("relay: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return r, stop
}

func waitRelay(t *testing.T, r *Relay, pos eventstore.Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := r.WaitFor(ctx, pos); err != nil {
		t.Fatalf("relay WaitFor(%s): %v", pos, err)
	}
}

// consumer reads the stream as a SIEM would: in a consumer group,
// acknowledging what it read.
type consumer struct {
	t      *testing.T
	rdb    redis.UniversalClient
	stream string
	seen   map[string]int // event ID → deliveries
}

func (c *consumer) readAll() {
	c.t.Helper()
	ctx := context.Background()
	for {
		res, err := c.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "siem", Consumer: "c1", Streams: []string{c.stream, ">"}, Count: 50, Block: -1}).Result()
		if errors.Is(err, redis.Nil) || (err == nil && len(res) == 0) || (err == nil && len(res[0].Messages) == 0) {
			return
		}
		if err != nil {
			c.t.Fatal(err)
		}
		for _, m := range res[0].Messages {
			msg, err := SIEMMarshaller{}.Unmarshal(m.Values)
			if err != nil {
				c.t.Fatal(err)
			}
			var rec AuditRecord
			if err := json.Unmarshal(msg.Payload, &rec); err != nil || rec.EventID != msg.UUID || rec.Hash == "" {
				c.t.Fatalf("entry %v: payload %s (%v); want the audit record of event %s with its hash", m.ID, msg.Payload, err, msg.UUID)
			}
			if msg.Metadata.Get("type") != rec.Type || msg.Metadata.Get("event") == "" || msg.Metadata.Get("position") != rec.Position {
				c.t.Fatalf("entry %v: metadata %v does not match the record", m.ID, msg.Metadata)
			}
			c.seen[msg.UUID]++
			if err := c.rdb.XAck(ctx, c.stream, "siem", m.ID).Err(); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

func TestRelayFeedsEveryAuditEventAcrossARestart(t *testing.T) {
	w := auditWorld(t)
	rdb, prefix := newRedis(t)
	stream := prefix + "audit"
	ctx := context.Background()
	if err := rdb.XGroupCreateMkStream(ctx, stream, "siem", "0").Err(); err != nil {
		t.Fatal(err)
	}
	c := &consumer{t: t, rdb: rdb, stream: stream, seen: map[string]int{}}

	relay, stop := startRelay(t, w.store, rdb, prefix)
	waitRelay(t, relay, w.last)
	c.readAll()
	stop()

	// More events while the relay is down, and a crash that lost the
	// checkpoint of the last batches: the next relay publishes them again.
	w.secret("olivia", "s1", domain.RevealSecret{})
	w.secret("olivia", "s1", domain.CopySecret{Field: "url"})
	all, err := w.store.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rewound := all[len(all)-10].Position
	if err := rdb.Set(ctx, prefix+"checkpoint:relay:"+stream, rewound.String(), 0).Err(); err != nil {
		t.Fatal(err)
	}

	relay, _ = startRelay(t, w.store, rdb, prefix)
	waitRelay(t, relay, w.last)
	c.readAll()

	want := map[string]bool{}
	for _, e := range all {
		if _, ok := domain.AuditEvent(e.Type); ok {
			want[e.ID.String()] = true
		}
	}
	dup := 0
	for id, n := range c.seen {
		if !want[id] {
			t.Fatalf("the feed carries %s, which is not an audit event of the log", id)
		}
		dup += n - 1
	}
	for id := range want {
		if c.seen[id] == 0 {
			t.Fatalf("audit event %s never reached the feed", id)
		}
	}
	if dup == 0 {
		t.Error("the rewound checkpoint published nothing again: the at-least-once path went untested")
	}
	t.Logf("%d audit events, each seen once after de-duplication (%d duplicates dropped)", len(want), dup)
}

func TestSIEMMarshallerRoundTrips(t *testing.T) {
	msg := message.NewMessage("id-1", []byte(`{"a":1}`))
	msg.Metadata.Set("type", "SecretRevealed")
	values, err := SIEMMarshaller{}.Marshal("s", msg)
	if err != nil {
		t.Fatal(err)
	}
	strs := map[string]any{}
	for k, v := range values {
		switch v := v.(type) {
		case []byte:
			strs[k] = string(v)
		default:
			strs[k] = v
		}
	}
	back, err := SIEMMarshaller{}.Unmarshal(strs)
	if err != nil || back.UUID != "id-1" || string(back.Payload) != `{"a":1}` || back.Metadata.Get("type") != "SecretRevealed" {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
	if values[redisstream.UUIDHeaderKey] != "id-1" {
		t.Fatalf("UUID field = %v", values[redisstream.UUIDHeaderKey])
	}
}
