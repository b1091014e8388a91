package mercure

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
)

const presenceTestBase = "https://hub.example/.well-known/mercure"

// presenceHandler is a handler with active subscriptions over a memory
// hub, for tests inside a synctest bubble; it closes with the test.
func presenceHandler(t *testing.T, grace time.Duration) (*Handler, *hub.Hub) {
	t.Helper()
	eng := memory.New(memory.Options{})
	hb, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ParseKey("subscriber-secret-subscriber-secret-01", nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewValidator(TokenConfig{SubscriberKey: key, Issuer: "herald", Audience: presenceTestBase, Draft8: true, Base: presenceTestBase})
	if err != nil {
		t.Fatal(err)
	}
	public, _ := url.Parse(presenceTestBase)
	h, err := New(Config{Hub: hb, Tokens: v, PublicURL: public, Draft8: true, Subscriptions: true, SubscriptionGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close(context.Background())
		hb.Close()
		_ = eng.Close()
	})
	return h, hb
}

func (h *Handler) testJoin(t *testing.T, g *Grant, topic string) *presenceConn {
	t.Helper()
	m, err := h.hub.Matchers().Get(hub.MatchExact, topic, h.base)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := h.presence.join(t.Context(), g, []*hub.Matcher{m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

func ends(h *Handler) float64 {
	return testutil.ToFloat64(h.presence.events.WithLabelValues("false", "published"))
}

// The end of a subscriber that could come back is announced when its
// grace period is over, not a moment before; each in its turn; and the
// ones still waiting are announced at once when the handler closes.
func TestGraceEndsAnnouncedOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const grace = 10 * time.Second
		h, _ := presenceHandler(t, grace)
		ann := h.testJoin(t, &Grant{Subject: "ann", Issuer: "herald"}, "https://example.com/a")
		bob := h.testJoin(t, &Grant{Subject: "bob", Issuer: "herald"}, "https://example.com/b")
		cid := h.testJoin(t, &Grant{Subject: "cid", Issuer: "herald"}, "https://example.com/c")
		anon := h.testJoin(t, nil, "https://example.com/d")

		h.presence.leave(anon) // cannot be recognized again: announced at once
		if got := ends(h); got != 1 {
			t.Fatalf("ends announced after an anonymous subscriber left: %v, want 1", got)
		}
		h.presence.leave(ann)
		time.Sleep(4 * time.Second)
		h.presence.leave(bob)
		time.Sleep(grace - 4*time.Second - time.Nanosecond)
		synctest.Wait()
		if got := ends(h); got != 1 {
			t.Fatalf("ends announced just before ann's grace period is over: %v, want 1", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := ends(h); got != 2 {
			t.Fatalf("ends announced as ann's grace period ends: %v, want 2", got)
		}
		time.Sleep(4*time.Second - time.Nanosecond)
		synctest.Wait()
		if got := ends(h); got != 2 {
			t.Fatalf("ends announced just before bob's: %v, want 2", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := ends(h); got != 3 {
			t.Fatalf("ends announced as bob's grace period ends: %v, want 3", got)
		}

		h.presence.leave(cid)
		time.Sleep(time.Second)
		h.Close(t.Context())
		if got := ends(h); got != 4 {
			t.Fatalf("ends announced at close: %v, want 4", got)
		}
		if n := h.presence.count(); n != 0 {
			t.Fatalf("%d subscriptions left after close", n)
		}
	})
}

// A subscriber back within its grace period keeps its identifier; its
// new token's payload, when it changed, is announced; nothing else is.
func TestGraceReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, _ := presenceHandler(t, time.Minute)
		g := &Grant{Subject: "ann", Issuer: "herald"}
		first := h.testJoin(t, g, "https://example.com/a")
		begins := func() float64 {
			return testutil.ToFloat64(h.presence.events.WithLabelValues("true", "published"))
		}
		h.presence.leave(first)
		time.Sleep(30 * time.Second)
		again := h.testJoin(t, g, "https://example.com/a")
		if again.id != first.id || begins() != 1 {
			t.Fatalf("returned as %s (was %s), %v beginnings announced", again.id, first.id, begins())
		}
		// Another issuer's ann is someone else.
		h.presence.leave(again)
		other := h.testJoin(t, &Grant{Subject: "ann", Issuer: "elsewhere"}, "https://example.com/a")
		if other.id == first.id {
			t.Fatal("a subscriber of another issuer took the identifier")
		}
		// The same one with a new payload: the subscription is announced
		// again, with it.
		m, err := hub.NewMatcher(hub.MatchExact, "https://example.com/a", presenceTestBase)
		if err != nil {
			t.Fatal(err)
		}
		g2 := &Grant{Subject: "ann", Issuer: "herald", details: []subscribeDetail{{topics: []*hub.Matcher{m}, payload: []byte(`{"v":2}`)}}}
		third := h.testJoin(t, g2, "https://example.com/a")
		if third.id != first.id || begins() != 3 || string(third.subs[0].payload) != `{"v":2}` {
			t.Fatalf("return with a new payload: id %s, %v beginnings, payload %s", third.id, begins(), third.subs[0].payload)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got := ends(h); got != 0 {
			t.Fatalf("%v ends announced for subscribers still there", got)
		}
	})
}

// A subscriber that leaves, returns and leaves again is announced gone a
// grace period after its last leaving, and does not hold back the end of
// one that left between.
func TestGraceLeaveReturnLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const grace = 10 * time.Second
		h, _ := presenceHandler(t, grace)
		ga := &Grant{Subject: "ann", Issuer: "herald"}
		a := h.testJoin(t, ga, "https://example.com/a")
		b := h.testJoin(t, &Grant{Subject: "bob", Issuer: "herald"}, "https://example.com/b")
		h.presence.leave(a) // t=0
		time.Sleep(time.Second)
		if back := h.testJoin(t, ga, "https://example.com/a"); back != a {
			t.Fatal("ann not recognized")
		}
		time.Sleep(time.Second)
		h.presence.leave(b) // t=2
		time.Sleep(3 * time.Second)
		h.presence.leave(a) // t=5
		time.Sleep(7*time.Second - time.Nanosecond)
		synctest.Wait()
		if got := ends(h); got != 0 {
			t.Fatalf("ends before bob's period is over: %v", got)
		}
		time.Sleep(time.Nanosecond) // t=12
		synctest.Wait()
		if got := ends(h); got != 1 {
			t.Fatalf("ends as bob's period ends: %v, want 1 (ann's earlier grace period must not hold it back)", got)
		}
		time.Sleep(3 * time.Second) // t=15
		synctest.Wait()
		if got := ends(h); got != 2 {
			t.Fatalf("ends as ann's second period ends: %v, want 2", got)
		}
		if Parked(h) != 0 || h.presence.count() != 0 {
			t.Fatalf("parked %d, active %d after both ended", Parked(h), h.presence.count())
		}
	})
}

// A hub that stops keeps its subscribers in their grace period in a file;
// the next start takes them back: one that returns keeps its identifier
// and nothing is announced, the end of one that does not is announced
// once the grace period is over.
func TestPresenceKeptAcrossRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const grace = 10 * time.Second
		eng := memory.New(memory.Options{})
		defer eng.Close()
		file := filepath.Join(t.TempDir(), "subscriptions.json")
		start := func() (*Handler, *hub.Hub) {
			hb, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
			if err != nil {
				t.Fatal(err)
			}
			key, _ := ParseKey("subscriber-secret-subscriber-secret-01", nil)
			v, _ := NewValidator(TokenConfig{SubscriberKey: key, Issuer: "herald", Audience: presenceTestBase, Draft8: true, Base: presenceTestBase})
			public, _ := url.Parse(presenceTestBase)
			h, err := New(Config{Hub: hb, Tokens: v, PublicURL: public, Draft8: true, Subscriptions: true, SubscriptionGrace: grace, PresenceFile: file})
			if err != nil {
				t.Fatal(err)
			}
			return h, hb
		}
		h1, hb1 := start()
		ann := &Grant{Subject: "ann", Issuer: "herald"}
		a := h1.testJoin(t, ann, "https://example.com/a")
		b := h1.testJoin(t, &Grant{Subject: "bob", Issuer: "herald"}, "https://example.com/b")
		h1.presence.leave(a) // the shutdown ends the streams
		h1.presence.leave(b)
		h1.Close(context.Background())
		hb1.Close()
		if got := ends(h1); got != 0 {
			t.Fatalf("the stopping hub announced %v ends, want none: they are kept", got)
		}

		h2, hb2 := start()
		defer hb2.Close()
		defer h2.Close(context.Background())
		if Parked(h2) != 2 {
			t.Fatalf("the new start took back %d subscribers, want 2", Parked(h2))
		}
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Fatalf("the file is still there after it was read: %v", err)
		}
		back := h2.testJoin(t, ann, "https://example.com/a")
		begins := testutil.ToFloat64(h2.presence.events.WithLabelValues("true", "published"))
		if back.id != a.id || begins != 0 {
			t.Fatalf("ann came back as %s (was %s), %v beginnings announced", back.id, a.id, begins)
		}
		time.Sleep(grace - time.Nanosecond)
		synctest.Wait()
		if got := ends(h2); got != 0 {
			t.Fatalf("ends before the grace period is over: %v", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := ends(h2); got != 1 {
			t.Fatalf("ends once the period is over: %v, want bob's alone", got)
		}
	})
}
