package esdbtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mysafe/mysafe/eventstore"
)

// streams implements the EventStoreDB Streams gRPC service over the backing
// store. The answers copy EventStoreDB's (see the server's
// Services/Transport/Grpc/Streams.*.cs and RpcExceptions.cs): the client
// decodes errors from status codes and from the "exception" trailer.
type streams struct {
	api.UnimplementedStreamsServer
	srv *Server
}

// Metadata keys and values EventStoreDB puts on every recorded event. The
// client reads "type" and "content-type", and calls log.Fatalf when
// "created" is missing or not an integer.
const (
	metaType        = "type"
	metaContentType = "content-type"
	metaCreated     = "created"
	contentTypeJSON = "application/json"
)

// Append handles the client-streaming append: the options first, then one
// proposed message per event.
func (h *streams) Append(stream api.Streams_AppendServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return status.Error(codes.InvalidArgument, "the first append message must carry the options")
	}
	name := streamName(opts.GetStreamIdentifier())
	expected, err := expectedFromAppend(opts)
	if err != nil {
		return err
	}

	var events []eventstore.EventData
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		msg := req.GetProposedMessage()
		if msg == nil {
			return status.Error(codes.InvalidArgument, "append messages after the options must be proposed messages")
		}
		for _, key := range []string{metaType, metaContentType} {
			if _, ok := msg.GetMetadata()[key]; !ok {
				stream.SetTrailer(metadata.Pairs(
					"exception", "missing-required-metadata-property",
					"required-metadata-properties", metaType+","+metaContentType))
				return status.Errorf(codes.InvalidArgument, "Required Metadata Property '%s' is missing", key)
			}
		}
		id, err := uuidFromProto(msg.GetId())
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "event id: %v", err)
		}
		events = append(events, eventstore.EventData{
			ID:       id,
			Type:     msg.GetMetadata()[metaType],
			Data:     msg.GetData(),
			Metadata: msg.GetCustomMetadata(),
		})
	}

	res, err := h.srv.backing.Append(ctx, name, expected, events...)
	var conflict *eventstore.ConflictError
	switch {
	case errors.As(err, &conflict):
		// Since 20.6.1 a wrong expected version is an answer, not an error.
		return stream.SendAndClose(&api.AppendResp{Result: &api.AppendResp_WrongExpectedVersion_{
			WrongExpectedVersion: wrongExpectedVersion(opts, conflict.Actual),
		}})
	case errors.Is(err, eventstore.ErrStreamDeleted):
		stream.SetTrailer(streamDeletedTrailer(name))
		return streamDeletedStatus(name)
	case err != nil:
		return statusOf(ctx, err)
	}
	return stream.SendAndClose(&api.AppendResp{Result: &api.AppendResp_Success_{Success: &api.AppendResp_Success{
		CurrentRevisionOption: &api.AppendResp_Success_CurrentRevision{CurrentRevision: res.NextExpectedRevision},
		PositionOption: &api.AppendResp_Success_Position{Position: &api.AppendResp_Position{
			CommitPosition:  res.Position.Commit,
			PreparePosition: res.Position.Prepare,
		}},
	}}})
}

func expectedFromAppend(o *api.AppendReq_Options) (eventstore.ExpectedRevision, error) {
	switch x := o.GetExpectedStreamRevision().(type) {
	case *api.AppendReq_Options_Any:
		return eventstore.Any, nil
	case *api.AppendReq_Options_NoStream:
		return eventstore.NoStream, nil
	case *api.AppendReq_Options_StreamExists:
		return eventstore.StreamExists, nil
	case *api.AppendReq_Options_Revision:
		return eventstore.Exact(x.Revision), nil
	}
	return eventstore.ExpectedRevision{}, status.Error(codes.InvalidArgument, "append options carry no expected revision")
}

// wrongExpectedVersion fills both the current and the 20.6.0 fields, as
// EventStoreDB does for clients of either vintage.
func wrongExpectedVersion(o *api.AppendReq_Options, actual *uint64) *api.AppendResp_WrongExpectedVersion {
	w := &api.AppendResp_WrongExpectedVersion{}
	if actual == nil {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_NoStream_20_6_0{NoStream_20_6_0: &shared.Empty{}}
	} else {
		w.CurrentRevisionOption = &api.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: *actual}
		w.CurrentRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_CurrentRevision_20_6_0{CurrentRevision_20_6_0: *actual}
	}
	switch x := o.GetExpectedStreamRevision().(type) {
	case *api.AppendReq_Options_Any:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_Any_20_6_0{Any_20_6_0: &shared.Empty{}}
	case *api.AppendReq_Options_NoStream:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
	case *api.AppendReq_Options_StreamExists:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_StreamExists_20_6_0{StreamExists_20_6_0: &shared.Empty{}}
	case *api.AppendReq_Options_Revision:
		w.ExpectedRevisionOption = &api.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: x.Revision}
		w.ExpectedRevisionOption_20_6_0 = &api.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: x.Revision}
	}
	return w
}

// Delete is EventStoreDB's soft delete. The port knows only tombstones, so
// here a soft-deleted stream is tombstoned too: it cannot be written again,
// unlike on a real server.
func (h *streams) Delete(ctx context.Context, req *api.DeleteReq) (*api.DeleteResp, error) {
	o := req.GetOptions()
	var expected expectedOneof
	if o != nil {
		expected = o.GetExpectedStreamRevision()
	}
	if err := h.delete(ctx, "Delete", streamName(o.GetStreamIdentifier()), expected); err != nil {
		return nil, err
	}
	// The client dereferences the position unconditionally, so "no
	// position" would crash it. The port does not say where a delete
	// lands; zero is as good as any.
	return &api.DeleteResp{PositionOption: &api.DeleteResp_Position_{Position: &api.DeleteResp_Position{}}}, nil
}

// Tombstone deletes a stream for good.
func (h *streams) Tombstone(ctx context.Context, req *api.TombstoneReq) (*api.TombstoneResp, error) {
	o := req.GetOptions()
	var expected expectedOneof
	if o != nil {
		expected = o.GetExpectedStreamRevision()
	}
	if err := h.delete(ctx, "Delete", streamName(o.GetStreamIdentifier()), expected); err != nil {
		return nil, err
	}
	return &api.TombstoneResp{PositionOption: &api.TombstoneResp_Position_{Position: &api.TombstoneResp_Position{}}}, nil
}

// expectedOneof is the expected-revision oneof of DeleteReq and
// TombstoneReq, which are distinct generated types with the same shape.
type expectedOneof any

func (h *streams) delete(ctx context.Context, op, name string, oneof expectedOneof) error {
	var expected eventstore.ExpectedRevision
	switch x := oneof.(type) {
	case *api.DeleteReq_Options_Any, *api.TombstoneReq_Options_Any:
		expected = eventstore.Any
	case *api.DeleteReq_Options_NoStream, *api.TombstoneReq_Options_NoStream:
		expected = eventstore.NoStream
	case *api.DeleteReq_Options_StreamExists, *api.TombstoneReq_Options_StreamExists:
		expected = eventstore.StreamExists
	case *api.DeleteReq_Options_Revision:
		expected = eventstore.Exact(x.Revision)
	case *api.TombstoneReq_Options_Revision:
		expected = eventstore.Exact(x.Revision)
	default:
		return status.Error(codes.InvalidArgument, "delete options carry no expected revision")
	}

	err := h.srv.backing.DeleteStream(ctx, name, expected)
	var conflict *eventstore.ConflictError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &conflict):
		// Deletes report a wrong expected version as an error, with the
		// versions in the message and in trailers (RpcExceptions.cs);
		// EventStoreDB writes "no stream" as -1.
		actual := int64(-1)
		if conflict.Actual != nil {
			actual = int64(*conflict.Actual)
		}
		_ = grpc.SetTrailer(ctx, metadata.Pairs(
			"exception", "wrong-expected-version",
			"stream-name", name,
			"expected-version", strconv.FormatInt(expectedVersion(expected), 10),
			"actual-version", strconv.FormatInt(actual, 10)))
		return status.Errorf(codes.FailedPrecondition,
			"%s failed due to WrongExpectedVersion. Stream: %s, Expected version: %d, Actual version: %d",
			op, name, expectedVersion(expected), actual)
	case errors.Is(err, eventstore.ErrStreamDeleted):
		_ = grpc.SetTrailer(ctx, streamDeletedTrailer(name))
		return streamDeletedStatus(name)
	default:
		return statusOf(ctx, err)
	}
}

// expectedVersion is EventStoreDB's integer encoding of an expected
// revision (ExpectedVersion.cs).
func expectedVersion(e eventstore.ExpectedRevision) int64 {
	switch {
	case e.IsNoStream():
		return -1
	case e.IsStreamExists():
		return -4
	}
	if r, ok := e.Revision(); ok {
		return int64(r)
	}
	return -2 // any
}

// Read serves stream reads, $all reads and $all subscriptions.
func (h *streams) Read(req *api.ReadReq, stream api.Streams_ReadServer) error {
	o := req.GetOptions()
	if o == nil {
		return status.Error(codes.InvalidArgument, "read request carries no options")
	}
	stringIDs := o.GetUuidOption().GetString_() != nil
	switch {
	case o.GetSubscription() != nil && o.GetAll() != nil:
		return h.subscribeAll(o, stream, stringIDs)
	case o.GetSubscription() != nil:
		return status.Error(codes.Unimplemented, "esdbtest: stream subscriptions are not implemented")
	case o.GetStream() != nil:
		return h.readStream(o, stream, stringIDs)
	case o.GetAll() != nil:
		return h.readAll(o, stream, stringIDs)
	}
	return status.Error(codes.InvalidArgument, "read request names neither a stream nor $all")
}

func direction(o *api.ReadReq_Options) eventstore.Direction {
	if o.GetReadDirection() == api.ReadReq_Options_Backwards {
		return eventstore.Backwards
	}
	return eventstore.Forwards
}

func (h *streams) readStream(o *api.ReadReq_Options, stream api.Streams_ReadServer, stringIDs bool) error {
	ctx := stream.Context()
	so := o.GetStream()
	name := streamName(so.GetStreamIdentifier())
	opts := eventstore.ReadStreamOptions{Direction: direction(o), Max: o.GetCount()}
	empty := o.GetCount() == 0 // Max 0 would mean "no bound" to the port
	switch x := so.GetRevisionOption().(type) {
	case *api.ReadReq_Options_StreamOptions_Revision:
		opts.From = x.Revision
	case *api.ReadReq_Options_StreamOptions_End:
		if opts.Direction == eventstore.Forwards {
			empty = true // nothing follows the end
		}
		opts.FromEnd = true
	}
	if empty {
		// Still tell a missing or deleted stream apart from an empty read.
		opts = eventstore.ReadStreamOptions{Direction: eventstore.Backwards, FromEnd: true, Max: 1}
	}

	events, err := h.srv.backing.ReadStream(ctx, name, opts)
	switch {
	case errors.Is(err, eventstore.ErrStreamNotFound):
		// A missing stream is an answer, not an error.
		return stream.Send(&api.ReadResp{Content: &api.ReadResp_StreamNotFound_{StreamNotFound: &api.ReadResp_StreamNotFound{
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(name)},
		}}})
	case errors.Is(err, eventstore.ErrStreamDeleted):
		stream.SetTrailer(streamDeletedTrailer(name))
		return streamDeletedStatus(name)
	case err != nil:
		return statusOf(ctx, err)
	}
	if empty {
		return nil
	}
	for _, e := range events {
		if err := stream.Send(eventResp(e, stringIDs)); err != nil {
			return err
		}
	}
	return nil
}

func (h *streams) readAll(o *api.ReadReq_Options, stream api.Streams_ReadServer, stringIDs bool) error {
	ctx := stream.Context()
	if o.GetCount() == 0 {
		return nil
	}
	f, err := newFilter(o)
	if err != nil {
		return err
	}
	opts := eventstore.ReadAllOptions{Direction: direction(o), From: allPosition(o.GetAll()), Max: o.GetCount()}
	// EventStoreDB reads backwards from a post-position, the end of a
	// record: from an event's own position, that event is not read. The
	// port's From is inclusive, so read one more and drop it.
	exclusive := opts.Direction == eventstore.Backwards && opts.From != eventstore.End && opts.From != eventstore.Start
	if exclusive && opts.Max < math.MaxUint64 {
		opts.Max++
	}
	events, err := h.srv.backing.ReadAll(ctx, opts)
	if err != nil {
		return statusOf(ctx, err)
	}
	if exclusive && len(events) > 0 && events[0].Position == opts.From {
		events = events[1:]
	}
	if uint64(len(events)) > o.GetCount() {
		events = events[:o.GetCount()]
	}
	for _, e := range events {
		if !f.match(e) {
			continue
		}
		if err := stream.Send(eventResp(e, stringIDs)); err != nil {
			return err
		}
	}
	return nil
}

func allPosition(ao *api.ReadReq_Options_AllOptions) eventstore.Position {
	switch x := ao.GetAllOption().(type) {
	case *api.ReadReq_Options_AllOptions_End:
		return eventstore.End
	case *api.ReadReq_Options_AllOptions_Position:
		return eventstore.Position{Commit: x.Position.GetCommitPosition(), Prepare: x.Position.GetPreparePosition()}
	}
	return eventstore.Start
}

// subscribeAll follows $all: the confirmation first (the client fails the
// subscription otherwise), then the events after the start position that
// pass the filter, caught_up once the backing store says so, and for a
// filtered subscription a checkpoint every window × multiplier events
// looked at, so that a sparse filter still reports progress.
func (h *streams) subscribeAll(o *api.ReadReq_Options, stream api.Streams_ReadServer, stringIDs bool) error {
	f, err := newFilter(o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	defer h.srv.register(cancel)()

	from := allPosition(o.GetAll())
	if from == eventstore.End {
		// Live only: start after the last event there is now.
		last, err := h.srv.backing.ReadAll(ctx, eventstore.ReadAllOptions{Direction: eventstore.Backwards, From: eventstore.End, Max: 1})
		if err != nil {
			return statusOf(ctx, err)
		}
		from = eventstore.Start
		if len(last) == 1 {
			from = last[0].Position
		}
	}
	// No prefixes: the filter is the client's, applied below.
	sub, err := h.srv.backing.SubscribeAll(ctx, eventstore.SubscribeAllOptions{From: from})
	if err != nil {
		return statusOf(ctx, err)
	}
	defer sub.Close()

	if err := stream.Send(&api.ReadResp{Content: &api.ReadResp_Confirmation{Confirmation: &api.ReadResp_SubscriptionConfirmation{
		SubscriptionId: uuid.NewString(),
	}}}); err != nil {
		return err
	}

	var considered uint64
	for {
		msg, err := sub.Recv()
		if err != nil {
			var drop dropCause
			if errors.As(context.Cause(ctx), &drop) {
				return drop.err
			}
			return statusOf(stream.Context(), err)
		}
		var resp *api.ReadResp
		switch {
		case msg.Event != nil:
			if f.match(*msg.Event) {
				if err := stream.Send(eventResp(*msg.Event, stringIDs)); err != nil {
					return err
				}
			}
			considered++
			if f != nil && considered >= f.interval {
				considered = 0
				resp = &api.ReadResp{Content: &api.ReadResp_Checkpoint_{Checkpoint: &api.ReadResp_Checkpoint{
					CommitPosition:  msg.Event.Position.Commit,
					PreparePosition: msg.Event.Position.Prepare,
				}}}
			}
		case msg.CaughtUp:
			resp = &api.ReadResp{Content: &api.ReadResp_CaughtUp_{CaughtUp: &api.ReadResp_CaughtUp{}}}
		}
		// The backing store's own checkpoints are ignored: they are about
		// its filter, and this subscription asked it for none.
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

// filter is a subscription's server-side filter: on stream names or on
// event types, by prefixes or by a regular expression.
type filter struct {
	onEventType bool
	prefixes    []string
	re          *regexp.Regexp
	interval    uint64 // checkpoint every this many events looked at
}

// newFilter reads the filter options; nil means no filter.
func newFilter(o *api.ReadReq_Options) (*filter, error) {
	fo := o.GetFilter()
	if fo == nil {
		return nil, nil
	}
	f := &filter{}
	var expr *api.ReadReq_Options_FilterOptions_Expression
	switch x := fo.GetFilter().(type) {
	case *api.ReadReq_Options_FilterOptions_StreamIdentifier:
		expr = x.StreamIdentifier
	case *api.ReadReq_Options_FilterOptions_EventType:
		expr = x.EventType
		f.onEventType = true
	default:
		return nil, status.Error(codes.InvalidArgument, "filter names neither stream identifiers nor event types")
	}
	f.prefixes = expr.GetPrefix()
	if r := expr.GetRegex(); r != "" {
		re, err := regexp.Compile(r)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "filter regex %q: %v", r, err)
		}
		f.re = re
	}
	window := uint64(32) // EventStoreDB's read batch size, used when the window is "count"
	if m := fo.GetMax(); m > 0 {
		window = uint64(m)
	}
	multiplier := uint64(fo.GetCheckpointIntervalMultiplier())
	if multiplier == 0 {
		multiplier = 1
	}
	f.interval = window * multiplier
	return f, nil
}

func (f *filter) match(e eventstore.RecordedEvent) bool {
	if f == nil {
		return true
	}
	subject := e.StreamID
	if f.onEventType {
		subject = e.Type
	}
	if f.re != nil && f.re.MatchString(subject) {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(subject, p) {
			return true
		}
	}
	return false
}

// eventResp renders a recorded event as EventStoreDB sends it.
func eventResp(e eventstore.RecordedEvent, stringIDs bool) *api.ReadResp {
	id := &shared.UUID{}
	if stringIDs {
		id.Value = &shared.UUID_String_{String_: e.ID.String()}
	} else {
		most, least := esdb.UUIDAsInt64(e.ID)
		id.Value = &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
			MostSignificantBits:  most,
			LeastSignificantBits: least,
		}}
	}
	return &api.ReadResp{Content: &api.ReadResp_Event{Event: &api.ReadResp_ReadEvent{
		Event: &api.ReadResp_ReadEvent_RecordedEvent{
			Id:               id,
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(e.StreamID)},
			StreamRevision:   e.Revision,
			PreparePosition:  e.Position.Prepare,
			CommitPosition:   e.Position.Commit,
			Metadata: map[string]string{
				metaType:        e.Type,
				metaContentType: contentTypeJSON,
				// .NET ticks (100 ns) since the Unix epoch, as the
				// client's createdFromProto expects. Built from seconds
				// so that no date overflows UnixNano.
				metaCreated: strconv.FormatInt(e.Created.Unix()*10_000_000+int64(e.Created.Nanosecond()/100), 10),
			},
			CustomMetadata: e.Metadata,
			Data:           e.Data,
		},
		Position: &api.ReadResp_ReadEvent_CommitPosition{CommitPosition: e.Position.Commit},
	}}}
}

func uuidFromProto(id *shared.UUID) (uuid.UUID, error) {
	if s := id.GetStructured(); s != nil {
		return esdb.ParseUUIDFromInt64(s.GetMostSignificantBits(), s.GetLeastSignificantBits())
	}
	if s := id.GetString_(); s != "" {
		return uuid.Parse(s)
	}
	return uuid.Nil, errors.New("missing")
}

func streamName(id *shared.StreamIdentifier) string { return string(id.GetStreamName()) }

// streamDeletedTrailer is what the client's handleError looks for to report
// ErrorCodeStreamDeleted; it indexes "stream-name" without checking, so both
// keys must be there.
func streamDeletedTrailer(name string) metadata.MD {
	return metadata.Pairs("exception", "stream-deleted", "stream-name", name)
}

func streamDeletedStatus(name string) error {
	return status.Errorf(codes.FailedPrecondition, "Event stream '%s' is deleted.", name)
}

// statusOf turns a backing-store error into a gRPC status.
func statusOf(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, eventstore.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, eventstore.ErrSubscriptionClosed):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, fmt.Sprintf("esdbtest: backing store: %v", err))
}
