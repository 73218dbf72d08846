package projections

import (
	"reflect"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// A handler in this process gets the batch from the message's context; the
// payload must still carry the very same batch for anyone reading the
// message elsewhere.
func TestPayloadCarriesTheSameBatchAsTheContext(t *testing.T) {
	store := newMemStore()
	appendRaw(t, store, "secret-a", 5)
	ch := subscribe(t, newTestSubscriber(t, store, 100), "t")
	msg := receive(t, ch)
	defer msg.Ack()

	inMemory := decode(t, msg)
	copied := message.NewMessage(msg.UUID, msg.Payload)
	copied.Metadata = msg.Metadata
	fromPayload := decode(t, copied)
	if len(inMemory.Events) == 0 {
		t.Fatal("the first message holds no events")
	}
	if !reflect.DeepEqual(fromPayload, inMemory) {
		t.Errorf("the payload decodes to\n%+v\nthe context holds\n%+v", fromPayload, inMemory)
	}
}
