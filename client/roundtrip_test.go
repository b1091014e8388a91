package client_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/client"
)

// drafts runs f for draft-08 and draft-07, each against a hub speaking
// only that draft.
func drafts(t *testing.T, f func(t *testing.T, draft7 bool)) {
	t.Run("draft08", func(t *testing.T) { f(t, false) })
	t.Run("draft07", func(t *testing.T) { f(t, true) })
}

// TestRoundTrip publishes and subscribes through a real herald, both
// drafts, both HTTP versions.
func TestRoundTrip(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		drafts(t, func(t *testing.T, draft7 bool) {
			h := newHerald(t, m, draft7)
			c, err := client.New(h.Config())
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			var conns connects
			sub, err := c.Subscribe(ctx, client.SubscribeOptions{
				Topics:    []string{"https://example.com/books/1"},
				OnConnect: conns.add,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()

			updates := []client.Update{
				{Topics: []string{"https://example.com/books/1"}, Data: "first"},
				{Topics: []string{"https://example.com/books/1", "https://example.com/other"}, Data: "two\nlines", ID: "urn:uuid:2", Type: "changed", Retry: 1500 * time.Millisecond},
				{Topics: []string{"https://example.com/books/1"}, Data: "secret", Private: true},
				{Topics: []string{"https://example.com/books/2"}, Data: "not subscribed"},
			}
			ids := make([]string, len(updates))
			for i, u := range updates {
				if ids[i], err = c.Publish(ctx, u); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				if ids[i] == "" {
					t.Fatalf("publish %d: empty id", i)
				}
			}
			if ids[1] != "urn:uuid:2" {
				t.Errorf("publish with id: got %q", ids[1])
			}
			for i, u := range updates[:3] {
				ev := next(t, sub)
				want := client.Event{ID: ids[i], Type: u.Type, Data: u.Data}
				if ev != want {
					t.Errorf("event %d: got %+v, want %+v", i, ev, want)
				}
			}
			if got := sub.LastEventID(); got != ids[2] {
				t.Errorf("LastEventID %q, want %q", got, ids[2])
			}
			if got := conns.get(); len(got) != 1 || got[0] != (client.ConnectInfo{Attempt: 1}) {
				t.Errorf("OnConnect: %+v", got)
			}

			// Resume from the first update: the hub says it resumed
			// exactly there.
			var rconns connects
			resumed, err := c.Subscribe(ctx, client.SubscribeOptions{
				Topics: []string{"https://example.com/books/1"}, LastEventID: ids[0], OnConnect: rconns.add,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer resumed.Close()
			for _, id := range ids[1:3] {
				if ev := next(t, resumed); ev.ID != id {
					t.Errorf("resumed: got %q, want %q", ev.ID, id)
				}
			}
			eventually(t, "OnConnect", func() bool { return len(rconns.get()) == 1 })
			if got := rconns.get()[0]; got != (client.ConnectInfo{Attempt: 1, Requested: ids[0], ResumedFrom: ids[0]}) {
				t.Errorf("resume OnConnect: %+v", got)
			}

			// An id the hub does not know: herald resumes live and says
			// it resumed from "earliest", which tells of a possible loss.
			var lconns connects
			lost, err := c.Subscribe(ctx, client.SubscribeOptions{
				Topics: []string{"https://example.com/books/1"}, LastEventID: "urn:uuid:unknown", OnConnect: lconns.add,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer lost.Close()
			late, err := c.Publish(ctx, client.Update{Topics: []string{"https://example.com/books/1"}, Data: "late"})
			if err != nil {
				t.Fatal(err)
			}
			if ev := next(t, lost); ev.ID != late {
				t.Errorf("after unknown id: got %q, want %q", ev.ID, late)
			}
			if got := lconns.get()[0]; !got.PossibleLoss || got.ResumedFrom != "earliest" {
				t.Errorf("unknown id OnConnect: %+v", got)
			}
			sub.Close()
			resumed.Close()
			lost.Close()
			h.protos.check(t, m)
		})
	})
}

// TestURLPatterns subscribes with a draft-08 URL pattern.
func TestURLPatterns(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		h := newHerald(t, m, false)
		c, err := client.New(h.Config())
		if err != nil {
			t.Fatal(err)
		}
		sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{URLPatterns: []string{"https://example.com/books/:id"}})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		for _, topic := range []string{"https://example.com/authors/1", "https://example.com/books/7"} {
			if _, err := c.Publish(t.Context(), client.Update{Topics: []string{topic}, Data: topic}); err != nil {
				t.Fatal(err)
			}
		}
		if ev := next(t, sub); ev.Data != "https://example.com/books/7" {
			t.Errorf("got %+v", ev)
		}
	})
}

// TestHeraldErrors checks what a real hub's refusals look like.
func TestHeraldErrors(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		h := newHerald(t, m, false)
		cfg := h.Config()
		cfg.PublisherToken, cfg.SubscriberToken = "not-a-token", ""
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Publish(t.Context(), client.Update{Topics: []string{"https://example.com/1"}})
		he, ok := errors.AsType[*client.HubError](err)
		if !ok || he.Status != http.StatusUnauthorized || he.Challenge == "" || !strings.HasPrefix(he.Challenge, "Bearer") {
			t.Errorf("publish with a bad token: %#v", err)
		}
		sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"https://example.com/1"}})
		he, ok = errors.AsType[*client.HubError](err)
		if sub != nil || !ok || he.Status != http.StatusUnauthorized {
			t.Errorf("subscribe without a token: %v, %#v", sub, err)
		}
	})
}

// TestReconnectAfterDrain ends a real hub's streams, as a draining node
// does, and checks that the subscription reconnects asking to resume from
// what it delivered, and ends cleanly with its context.
func TestReconnectAfterDrain(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		h := newHerald(t, m, false)
		c, err := client.New(h.Config())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var conns connects
		sub, err := c.Subscribe(ctx, client.SubscribeOptions{Topics: []string{"t"}, OnConnect: conns.add})
		if err != nil {
			t.Fatal(err)
		}
		first, err := c.Publish(ctx, client.Update{Topics: []string{"t"}, Data: "1"})
		if err != nil {
			t.Fatal(err)
		}
		if ev := next(t, sub); ev.ID != first {
			t.Fatalf("got %+v", ev)
		}
		// The drained hub refuses new streams with a 200 that ends at once;
		// the client keeps trying with backoff until ctx ends.
		h.hub.EndStreams()
		eventually(t, "a reconnection", func() bool { return len(conns.get()) >= 2 })
		got := conns.get()[1]
		if got.Requested != first {
			t.Errorf("reconnection requested %q, want %q", got.Requested, first)
		}
		cancel()
		if err := ended(t, sub); err != nil {
			t.Errorf("Err after cancel: %v", err)
		}
	})
}
