package projections

// The SIEM relay publishes every audit-relevant event (domain.AuditEvent)
// to a Redis Stream through watermill-redisstream, for security tools to
// consume with consumer groups. Delivery is at least once: the relay
// publishes a batch, then stores its checkpoint; a crash in between
// publishes that batch again after the restart, so consumers de-duplicate
// on the message UUID, which is the event ID.
//
// One entry of the stream (XADD <stream> * field value ...):
//
//	_watermill_message_uuid  the event ID (a UUID), the de-duplication key
//	payload                  JSON AuditRecord, as the audit report lists it:
//	                         eventId, position, stream, revision, type,
//	                         event, secretId, secretName, actor {id,name},
//	                         at, ip, userAgent, correlationId, data (never
//	                         a secret value), hash (the chain hash)
//	type, event, position, at  copies of those fields, for routing
//	                         without parsing the payload
//
// It runs apart from the read-model projections (its own subscription and
// router), so a SIEM Redis that is down holds back the feed only, never the
// queries' read-your-writes. It keeps, in the Redis it publishes to:
//
//	<p>checkpoint:relay:<stream>  the log is published up to here
//	<p>relay:name:<secretId>      the secret's current name, to name it in
//	                              events that do not carry it

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mysafe/mysafe/domain"
	"github.com/mysafe/mysafe/eventstore"
)

// RelayConfig configures the SIEM relay.
type RelayConfig struct {
	Store eventstore.Store
	// Redis is where the stream goes, and the relay's checkpoint. It must be
	// a client of the relay's own: closing the relay closes it.
	Redis redis.UniversalClient
	// Prefix starts the relay's own keys; "" means DefaultPrefix.
	Prefix string
	// Stream is the Redis Stream's key; "" means Prefix + "audit".
	Stream string
	// MaxLen trims the stream to about this many entries; 0 keeps all.
	MaxLen     int64
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Relay publishes the audit events of the log to a Redis Stream.
type Relay struct {
	cfg       RelayConfig
	keys      keys
	publisher *redisstream.Publisher
	projector *Projector
}

// NewRelay returns a relay; Run runs it.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	k := newKeys(cfg.Prefix)
	if cfg.Stream == "" {
		cfg.Stream = string(k) + "audit"
	}
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client: cfg.Redis, Marshaller: SIEMMarshaller{}, DefaultMaxlen: cfg.MaxLen,
	}, watermill.NewSlogLogger(cfg.Logger))
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r := &Relay{cfg: cfg, keys: k, publisher: pub}
	r.projector = newProjector(Config{Store: cfg.Store, Redis: cfg.Redis, Prefix: cfg.Prefix, Logger: cfg.Logger, Registerer: cfg.Registerer}, r)
	return r, nil
}

// Run publishes until ctx is cancelled, then closes the publisher and with
// it the relay's Redis client. A Relay runs once.
func (r *Relay) Run(ctx context.Context) error {
	defer r.publisher.Close()
	return r.projector.Run(ctx)
}

// WaitFor blocks until the relay has published the log up to pos.
func (r *Relay) WaitFor(ctx context.Context, pos eventstore.Position) error {
	return r.projector.WaitFor(ctx, pos)
}

// Name names the relay in logs and metrics.
func (r *Relay) Name() string { return "relay" }

// StreamPrefixes is every stream, as for the audit projection.
func (r *Relay) StreamPrefixes() []string { return nil }

func (r *Relay) checkpointKey() string { return r.keys.checkpoint("relay:" + r.cfg.Stream) }

// Checkpoint loads how far the relay has published.
func (r *Relay) Checkpoint(ctx context.Context) (eventstore.Position, error) {
	return parseCheckpoint(r.cfg.Redis.Get(ctx, r.checkpointKey()).Result())
}

// Apply publishes the batch's audit events, then stores the checkpoint.
func (r *Relay) Apply(ctx context.Context, b Batch) (eventstore.Position, error) {
	cp, err := r.Checkpoint(ctx)
	if err != nil {
		return eventstore.Position{}, err
	}
	if b.Position.Compare(cp) <= 0 {
		return cp, nil
	}
	var events []decoded
	var secretIDs []string
	for _, rec := range b.Events {
		if _, ok := domain.AuditEvent(rec.Type); !ok || rec.Position.Compare(cp) <= 0 {
			continue
		}
		ev, err := domain.Decode(rec.Type, rec.Data, rec.Metadata)
		if err != nil {
			return eventstore.Position{}, fmt.Errorf("relay: event %s at %s in %s: %w", rec.ID, rec.Position, rec.StreamID, err)
		}
		events = append(events, decoded{rec: rec, ev: ev})
		if id, ok := strings.CutPrefix(rec.StreamID, domain.SecretStreamPrefix); ok && !slices.Contains(secretIDs, id) {
			secretIDs = append(secretIDs, id)
		}
	}
	names := map[string]string{}
	if len(secretIDs) > 0 {
		vals, err := r.cfg.Redis.MGet(ctx, mapKeys(secretIDs, r.nameKey)...).Result()
		if err != nil {
			return eventstore.Position{}, fmt.Errorf("relay: load names: %w", err)
		}
		for i, v := range vals {
			if s, ok := v.(string); ok {
				names[secretIDs[i]] = s
			}
		}
	}
	msgs := make([]*message.Message, 0, len(events))
	changed := map[string]string{}
	for _, e := range events {
		id := strings.TrimPrefix(e.rec.StreamID, domain.SecretStreamPrefix)
		rec, _ := NewAuditRecord(e.rec, e.ev, names[id])
		if rec.SecretID != "" && rec.SecretName != names[rec.SecretID] {
			names[rec.SecretID], changed[rec.SecretID] = rec.SecretName, rec.SecretName
		}
		payload, err := json.Marshal(rec)
		if err != nil {
			return eventstore.Position{}, err
		}
		msg := message.NewMessage(rec.EventID, payload)
		msg.Metadata.Set("type", rec.Type)
		msg.Metadata.Set("event", rec.Event)
		msg.Metadata.Set("position", rec.Position)
		msg.Metadata.Set("at", rec.At.Format(time.RFC3339Nano))
		msg.SetContext(ctx)
		msgs = append(msgs, msg)
	}
	if len(msgs) > 0 {
		if err := r.publisher.Publish(r.cfg.Stream, msgs...); err != nil {
			return eventstore.Position{}, fmt.Errorf("relay: publish: %w", err)
		}
	}
	_, err = r.cfg.Redis.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		for id, name := range changed {
			pipe.Set(ctx, r.nameKey(id), name, 0)
		}
		pipe.Set(ctx, r.checkpointKey(), b.Position.String(), 0)
		return nil
	})
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("relay: store checkpoint: %w", err)
	}
	return b.Position, nil
}

func (r *Relay) nameKey(secretID string) string { return string(r.keys) + "relay:name:" + secretID }

// SIEMMarshaller lays a message out as flat stream fields, readable by any
// Redis client: the UUID under watermill's own field name, the payload,
// and each metadata entry as a field of its own. It reads them back for
// watermill subscribers.
type SIEMMarshaller struct{}

// reservedFields are the stream fields that are not metadata.
var reservedFields = []string{redisstream.UUIDHeaderKey, "payload"}

// Marshal lays out one message.
func (SIEMMarshaller) Marshal(_ string, msg *message.Message) (map[string]any, error) {
	values := map[string]any{redisstream.UUIDHeaderKey: msg.UUID, "payload": []byte(msg.Payload)}
	for k, v := range msg.Metadata {
		if slices.Contains(reservedFields, k) {
			return nil, fmt.Errorf("metadata key %q is reserved", k)
		}
		values[k] = v
	}
	return values, nil
}

// Unmarshal reads one message back.
func (SIEMMarshaller) Unmarshal(values map[string]any) (*message.Message, error) {
	uuid, ok := values[redisstream.UUIDHeaderKey].(string)
	if !ok {
		return nil, errors.New("stream entry without " + redisstream.UUIDHeaderKey)
	}
	payload, _ := values["payload"].(string)
	msg := message.NewMessage(uuid, []byte(payload))
	for k, v := range values {
		if s, ok := v.(string); ok && !slices.Contains(reservedFields, k) {
			msg.Metadata.Set(k, s)
		}
	}
	return msg, nil
}
