package hub_test

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
)

const presenceTopic = "/.well-known/mercure/subscriptions/t/urn:uuid:1"

func (f *fixture) publishPresence(id string) {
	f.t.Helper()
	if _, err := f.hub.Publish(f.t.Context(), hub.Message{ID: id, Topics: []string{presenceTopic}, Private: true, Presence: true, Data: "{}"}); err != nil {
		f.t.Fatal(err)
	}
}

// watcher subscribes to the presence topic, authorized, as a presence
// watcher; other subscribes to "t".
func (f *fixture) watcher(resume string) hub.SubscribeOptions {
	return hub.SubscribeOptions{
		Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, presenceTopic), f.matcher(hub.MatchExact, "t")},
		CanRead:  func([]string) bool { return true },
		Presence: true,
		Resume:   resume != "", LastEventID: resume,
	}
}

// TestPresenceChurnKeepsHistory: a churn of presence updates far beyond
// their retention pushes no application update out of the history. A
// subscriber that does not watch presence resumes where it was, losing
// nothing; a watcher resuming from the same place is told that it lost
// presence updates (ResumedFrom is earliest) and gets what is left.
func TestPresenceChurnKeepsHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 5, MaxPresence: 3}})
		f := newFixture(t, hub.Config{Engine: eng, Heartbeat: -1})
		ctx := t.Context()
		for i := range 5 {
			f.publish("t", fmt.Sprintf("a%d", i), "", false)
		}
		for i := range 100 {
			f.publishPresence(fmt.Sprintf("p%d", i))
		}

		s, err := f.hub.Subscribe(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "a0"})
		if err != nil {
			t.Fatal(err)
		}
		if s.ResumedFrom() != "a0" {
			t.Fatalf("a subscriber to t resumed from %q, want a0: presence updates dropped nothing of its", s.ResumedFrom())
		}
		s.Close()
		w, err := f.hub.Subscribe(ctx, f.watcher("a0"))
		if err != nil {
			t.Fatal(err)
		}
		if w.ResumedFrom() != hub.EarliestID {
			t.Fatalf("a presence watcher resumed from %q after 97 presence updates were dropped; want %q", w.ResumedFrom(), hub.EarliestID)
		}
		w.Close()

		other, watcher := &recorder{}, &recorder{}
		f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "a0"}, other)
		f.serve(ctx, f.watcher("a0"), watcher)
		f.publish("t", "sentinel", "", false)
		if got := other.before(t, "sentinel"); !slices.Equal(got, []string{"a1", "a2", "a3", "a4"}) {
			t.Fatalf("the subscriber to t got %v, want a1…a4", got)
		}
		if got := watcher.before(t, "sentinel"); !slices.Equal(got, []string{"a1", "a2", "a3", "a4", "p97", "p98", "p99"}) {
			t.Fatalf("the watcher got %v, want a1…a4 and the last three presence updates", got)
		}
		if n := eng.HistoryLen(); n != 5+3 {
			t.Fatalf("HistoryLen() = %d, want 5 updates and 3 presence updates", n)
		}
	})
}

// TestDispatcherPresenceGapEndsWatchers: the dispatcher falls behind while
// presence updates churn past their retention, so some are dropped before
// it offers them. The live presence watcher ends with ErrLost; a live
// subscriber that does not watch presence goes on, losing nothing.
func TestDispatcherPresenceGapEndsWatchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 1000, MaxPresence: 3}})
		f := newFixture(t, hub.Config{Engine: eng, InboxBytes: 512, Heartbeat: -1})
		ctx := t.Context()
		_, watcherDone := f.serve(ctx, f.watcher(""), &recorder{})
		other := &recorder{}
		_, otherDone := f.serve(ctx, f.onTopic("t"), other)
		release := f.stallDispatcher(ctx)
		for i := range 100 {
			f.publishPresence(fmt.Sprintf("p%d", i))
			if i%10 == 0 {
				f.publish("t", fmt.Sprintf("a%d", i/10), "", false)
			}
		}
		release()
		if err := endOf(t, "the presence watcher", watcherDone); !errors.Is(err, hub.ErrLost) {
			t.Fatalf("the presence watcher ended with %v, want ErrLost", err)
		}
		f.publish("t", "sentinel", "", false)
		if got := other.before(t, "sentinel"); len(got) != 10 || got[0] != "a0" || got[9] != "a9" {
			t.Fatalf("the subscriber to t got %v, want a0…a9", got)
		}
		if len(otherDone) != 0 {
			t.Fatalf("the subscriber to t ended: %v", <-otherDone)
		}
	})
}

// skipFeed is a memory engine whose feed leaves out the updates appended
// while withhold is set, as a shared engine's feed skips what a lagging
// node missed: the next batch says so in its After.
type skipFeed struct {
	*memory.Engine
	withhold atomic.Bool
}

func (e *skipFeed) Listen(feed func(hub.Batch)) (hub.Position, error) {
	return e.Engine.Listen(func(b hub.Batch) {
		if e.withhold.Load() {
			return
		}
		feed(b)
	})
}

// TestCatchUpOverDroppedPresence: the feed skipped two presence updates,
// which retention then dropped from the middle of the history, so the
// dispatcher's catch-up finds nothing left where they were, only updates
// past them. It passes over them: the watcher ends (it lost them), the
// others get everything after, and the dispatcher goes on.
func TestCatchUpOverDroppedPresence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := &skipFeed{Engine: memory.New(memory.Options{Retention: hub.Retention{MaxCount: 100, MaxPresence: 2}})}
		f := newFixture(t, hub.Config{Engine: eng, Heartbeat: -1})
		ctx := t.Context()
		_, watcherDone := f.serve(ctx, f.watcher(""), &recorder{})
		other := &recorder{}
		f.serve(ctx, f.onTopic("t"), other)
		release := f.stallDispatcher(ctx)
		eng.withhold.Store(true)
		f.publishPresence("p1")
		f.publishPresence("p2")
		eng.withhold.Store(false)
		f.publishPresence("p3") // its batch says p1 and p2 were skipped
		f.publishPresence("p4") // and pushes them out of the history
		f.publish("t", "a", "", false)
		release()
		if err := endOf(t, "the presence watcher", watcherDone); !errors.Is(err, hub.ErrLost) {
			t.Fatalf("the presence watcher ended with %v, want ErrLost", err)
		}
		f.publish("t", "sentinel", "", false)
		if got := other.before(t, "sentinel"); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("the subscriber to t got %v, want a", got)
		}
	})
}

// holeFeed is a memory engine whose feed leaves out the updates appended
// while withhold is set without saying so in After, as engine/redis's
// feed does for presence updates deleted before it read them.
type holeFeed struct {
	*memory.Engine
	withhold atomic.Bool
	last     uint64 // Seq of the last update fed; the feed's calls never overlap
}

func (e *holeFeed) Listen(feed func(hub.Batch)) (hub.Position, error) {
	return e.Engine.Listen(func(b hub.Batch) {
		if e.withhold.Load() {
			return
		}
		b.After = e.last
		if n := len(b.Updates); n > 0 {
			e.last = b.Updates[n-1].Seq
		}
		feed(b)
	})
}

// TestFeedHoleEndsWatchers: a batch with a hole in its Seqs (presence
// updates deleted before a lagging node's feed read them) ends the
// presence watchers, who lost them, and nobody else.
func TestFeedHoleEndsWatchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := &holeFeed{Engine: memory.New(memory.Options{})}
		f := newFixture(t, hub.Config{Engine: eng, Heartbeat: -1})
		ctx := t.Context()
		_, watcherDone := f.serve(ctx, f.watcher(""), &recorder{})
		other := &recorder{}
		_, otherDone := f.serve(ctx, f.onTopic("t"), other)
		synctest.Wait()
		eng.withhold.Store(true)
		f.publishPresence("p1")
		eng.withhold.Store(false)
		f.publishPresence("p2")
		f.publish("t", "a", "", false)
		if err := endOf(t, "the presence watcher", watcherDone); !errors.Is(err, hub.ErrLost) {
			t.Fatalf("the presence watcher ended with %v, want ErrLost", err)
		}
		f.publish("t", "sentinel", "", false)
		if got := other.before(t, "sentinel"); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("the subscriber to t got %v, want a", got)
		}
		if len(otherDone) != 0 {
			t.Fatalf("the subscriber to t ended: %v", <-otherDone)
		}
	})
}
