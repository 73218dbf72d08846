package eventstore

// Tamper evidence: every event appended through Execute carries, in its
// metadata, the SHA-256 of its canonical content chained to the hash of
// the event before it in the same stream. Changing, inserting or removing
// an event in the middle of a stream breaks the chain at that event, and
// Verifier names it.
//
// The canonical content of an event is, in this order, each variable-length
// part preceded by its length as 8 big-endian bytes:
//
//	"mysafe-chain-v1"  domain separation
//	previous hash      32 bytes, or nothing for the first event of a stream
//	stream name
//	revision           8 bytes, big-endian
//	event ID           16 bytes
//	event type
//	data               as stored
//	metadata           as stored, less the hash member (see below)
//
// The hash is the last member of the metadata JSON object,
// `,"hash":"<64 lowercase hex>"}`, so the metadata without it is recovered
// byte for byte by cutting that suffix: no re-encoding, whose output could
// change between versions, is ever hashed. Position and creation time are
// left out: the store assigns them after the hash is made.
//
// Events written before the chain existed carry no hash member: that is
// their format version (chain version 0). Verifier computes their hashes as
// if they had one, so the first hashed event after them covers them too, but
// cannot tell which of them changed; once a stream has a hashed event, every
// later one must have one.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// chainTag separates mysafe's chain hashes from any other SHA-256 use and
// versions the canonical encoding.
const chainTag = "mysafe-chain-v1"

// hashMember is how the hash closes a metadata object.
const hashMember = `"hash":"`

// hashSuffixLen is len(`"hash":"` + 64 hex + `"}`).
const hashSuffixLen = len(hashMember) + 2*sha256.Size + 2

// ChainHash is the hash of one event given the hash of the event before
// it in its stream (nil for the first). meta is the metadata without the
// hash member.
func ChainHash(prev []byte, stream string, revision uint64, id [16]byte, eventType string, data, meta []byte) []byte {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(chainTag))
	field(prev)
	field([]byte(stream))
	var rev [8]byte
	binary.BigEndian.PutUint64(rev[:], revision)
	h.Write(rev[:])
	h.Write(id[:])
	field([]byte(eventType))
	field(data)
	field(meta)
	return h.Sum(nil)
}

// SplitHash separates stored metadata into the metadata without its hash
// member and the hash. ok is false for metadata that carries no hash (an
// event written before the chain existed, or by a writer that bypassed
// Execute); meta is then returned unchanged.
func SplitHash(stored []byte) (meta, hash []byte, ok bool) {
	n := len(stored)
	if n < hashSuffixLen+1 || stored[n-1] != '}' || stored[n-2] != '"' {
		return stored, nil, false
	}
	start := n - hashSuffixLen
	if !bytes.Equal(stored[start:start+len(hashMember)], []byte(hashMember)) {
		return stored, nil, false
	}
	hash = make([]byte, sha256.Size)
	if _, err := hex.Decode(hash, stored[start+len(hashMember):n-2]); err != nil {
		return stored, nil, false
	}
	switch stored[start-1] {
	case ',':
		meta = append(bytes.Clone(stored[:start-1]), '}')
	case '{':
		meta = []byte("{}")
	default:
		return stored, nil, false
	}
	return meta, hash, true
}

// HashOf returns the hash an event carries in its metadata, as lowercase
// hex, or "" if it carries none.
func HashOf(e RecordedEvent) string {
	if _, h, ok := SplitHash(e.Metadata); ok {
		return hex.EncodeToString(h)
	}
	return ""
}

// withHash appends the hash member to a metadata object. Empty metadata is
// the empty object.
func withHash(meta, hash []byte) ([]byte, error) {
	meta = bytes.TrimSpace(meta)
	if len(meta) == 0 {
		meta = []byte("{}")
	}
	if meta[0] != '{' || meta[len(meta)-1] != '}' {
		return nil, fmt.Errorf("chain: metadata is not a JSON object")
	}
	out := make([]byte, 0, len(meta)+hashSuffixLen+1)
	out = append(out, meta[:len(meta)-1]...)
	if !bytes.Equal(meta, []byte("{}")) {
		out = append(out, ',')
	}
	out = append(out, hashMember...)
	out = hex.AppendEncode(out, hash)
	return append(out, '"', '}'), nil
}

// chainHead is the hash of a stream's last event: the hash it carries, or,
// for a stream written before the chain existed, the one computed over it.
func chainHead(history []RecordedEvent) []byte {
	if n := len(history); n > 0 {
		if _, h, ok := SplitHash(history[n-1].Metadata); ok {
			return h
		}
	}
	var prev []byte
	for _, e := range history {
		prev = recordHash(prev, e)
	}
	return prev
}

// recordHash is the chain hash of a recorded event after prev, whether or
// not the event carries one.
func recordHash(prev []byte, e RecordedEvent) []byte {
	meta, _, _ := SplitHash(e.Metadata)
	return ChainHash(prev, e.StreamID, e.Revision, e.ID, e.Type, e.Data, meta)
}

// Chain writes the chain hash into the metadata of events about to be
// appended to stream after history (the stream's whole content, empty for
// a new stream). The events' IDs must be set: the hash covers them.
func Chain(stream string, history []RecordedEvent, events []EventData) error {
	prev := chainHead(history)
	var next uint64
	if n := len(history); n > 0 {
		next = history[n-1].Revision + 1
	}
	for i := range events {
		e := &events[i]
		meta := bytes.TrimSpace(e.Metadata)
		if len(meta) == 0 {
			meta = []byte("{}")
		}
		h := ChainHash(prev, stream, next+uint64(i), e.ID, e.Type, e.Data, meta)
		sealed, err := withHash(meta, h)
		if err != nil {
			return fmt.Errorf("append to %q: %w", stream, err)
		}
		e.Metadata, prev = sealed, h
	}
	return nil
}

// ChainError names the first event whose hash does not match.
type ChainError struct {
	Stream   string
	Revision uint64
	Position Position
	EventID  string
	Reason   string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("stream %q, revision %d (event %s at position %s): %s", e.Stream, e.Revision, e.EventID, e.Position, e.Reason)
}

// Verifier recomputes hash chains from events read in log order (all
// streams interleaved, or one stream). It keeps one small head per stream.
type Verifier struct {
	heads map[string]*verifyHead
	// Events counts the events checked; Hashed those that carry a hash;
	// Unhashed those written before the chain existed.
	Events, Hashed, Unhashed uint64
}

type verifyHead struct {
	next     uint64 // the revision expected next
	prev     []byte
	hashed   bool   // the stream has had a hashed event
	unhashed uint64 // unhashed events since the last hashed one
}

// NewVerifier returns a Verifier with no stream seen.
func NewVerifier() *Verifier { return &Verifier{heads: map[string]*verifyHead{}} }

// Check checks the next event. A *ChainError names the event where a
// stream's chain breaks; the Verifier stays usable for other streams.
func (v *Verifier) Check(e RecordedEvent) error {
	v.Events++
	h := v.heads[e.StreamID]
	if h == nil {
		h = &verifyHead{}
		v.heads[e.StreamID] = h
	}
	fail := func(format string, args ...any) error {
		return &ChainError{Stream: e.StreamID, Revision: e.Revision, Position: e.Position, EventID: e.ID.String(), Reason: fmt.Sprintf(format, args...)}
	}
	if e.Revision != h.next {
		return fail("expected revision %d here: events are missing or out of place", h.next)
	}
	h.next++
	computed := recordHash(h.prev, e)
	_, stored, ok := SplitHash(e.Metadata)
	switch {
	case !ok && h.hashed:
		return fail("carries no hash although earlier events of its stream do: its metadata was altered")
	case !ok:
		v.Unhashed++
		h.unhashed++
	case !bytes.Equal(stored, computed):
		if h.unhashed > 0 {
			return fail("hash does not match: this event or one of the %d events before it written without a hash (revisions %d to %d) was altered",
				h.unhashed, e.Revision-h.unhashed, e.Revision-1)
		}
		return fail("hash does not match its content and the hash of the event before it: this event was altered")
	default:
		v.Hashed++
		h.hashed, h.unhashed = true, 0
	}
	h.prev = computed
	return nil
}
