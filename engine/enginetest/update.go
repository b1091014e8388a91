package enginetest

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/sse"
)

// NewUpdate returns an update with the given id, two topics, a valid SSE
// frame and Time set to now. Everything but Time and Seq is a function of
// id, so a test can rebuild the expected update from an id alone.
func NewUpdate(id string) *hub.Update {
	frame, err := sse.Encode(&sse.Event{
		ID:   id,
		Type: "book",
		Data: fmt.Sprintf("{\"id\":%q,\n\"title\":\"Conformance\"}", id),
	})
	if err != nil {
		panic(fmt.Sprintf("enginetest: id %q cannot be encoded: %v", id, err))
	}
	return &hub.Update{
		ID:      id,
		Topics:  []string{"https://example.com/books/" + id, "https://example.com/books/{id}"},
		Private: len(id)%2 == 1,
		Time:    time.Now(),
		Frame:   frame,
	}
}

// diff describes how got differs from want, ignoring the monotonic clock
// and location of Time (engines store instants). Empty means equal.
func diff(got, want *hub.Update) string {
	switch {
	case got == nil:
		return "nil update"
	case got.Seq != want.Seq:
		return fmt.Sprintf("Seq %d, want %d", got.Seq, want.Seq)
	case got.ID != want.ID:
		return fmt.Sprintf("seq %d: ID %q, want %q", got.Seq, got.ID, want.ID)
	case !slices.Equal(got.Topics, want.Topics):
		return fmt.Sprintf("seq %d: Topics %q, want %q", got.Seq, got.Topics, want.Topics)
	case got.Private != want.Private:
		return fmt.Sprintf("seq %d: Private %v, want %v", got.Seq, got.Private, want.Private)
	case got.Presence != want.Presence:
		return fmt.Sprintf("seq %d: Presence %v, want %v", got.Seq, got.Presence, want.Presence)
	case !got.Time.Equal(want.Time):
		return fmt.Sprintf("seq %d: Time %v, want %v", got.Seq, got.Time, want.Time)
	case !bytes.Equal(got.Frame, want.Frame):
		return fmt.Sprintf("seq %d: Frame %q, want %q", got.Seq, got.Frame, want.Frame)
	}
	return ""
}
