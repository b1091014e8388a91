package hub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/sse"
)

// Every test of the hub runs in a synctest bubble: the hub, its dispatcher
// and clock goroutines, the memory engine and the writers all live in it,
// and time is the bubble's fake clock. Timers fire at exactly the instant
// they are set for, so the tests assert times exactly, and move time only
// with time.Sleep. Each test's hub is closed inside its bubble (t.Cleanup
// runs there), and synctest.Test fails if a goroutine outlives it.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor lets every goroutine of the test's bubble run until it is
// blocked (synctest.Wait), then requires cond. Once all of a bubble is
// blocked nothing in it changes until time moves, which only the test does
// (time.Sleep); so a condition that does not hold then never will, and
// there is nothing to poll and no deadline to pick. It must be called
// inside a bubble; every hub test runs in one.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	synctest.Wait()
	if !cond() {
		t.Fatalf("%s: not so once every goroutine is blocked", what)
	}
}

// endOf waits for a Serve that must have returned by the time the bubble
// is idle, and returns its error. done must be buffered.
func endOf(t testing.TB, what string, done <-chan error) error {
	t.Helper()
	waitFor(t, what+" to end", func() bool { return len(done) > 0 })
	return <-done
}

// flush is what one Flush sent, and when (the bubble's time).
type flush struct {
	at   time.Time
	data string
}

// recorder is a hub.Stream that keeps what was flushed, and when.
type recorder struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	flushed []byte
	log     []flush
	block   chan struct{} // when non-nil, the first Write waits for it
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.block != nil {
		<-r.block // the first write parks until released
		r.block = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushed = append(r.flushed, r.buf.Bytes()...)
	r.log = append(r.log, flush{at: time.Now(), data: r.buf.String()})
	r.buf.Reset()
	return nil
}

func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

func (r *recorder) flushes() []flush {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

func (r *recorder) events(t testing.TB) []sse.Event {
	t.Helper()
	r.mu.Lock()
	data := append([]byte(nil), r.flushed...)
	r.mu.Unlock()
	return parse(data)
}

func parse(data []byte) []sse.Event {
	rd := sse.NewReader(bytes.NewReader(data))
	var out []sse.Event
	for {
		ev, err := rd.Next()
		if err != nil {
			return out
		}
		out = append(out, ev)
	}
}

// before waits for the event with id sentinel and returns the ids of the
// events the recorder got before it. The sentinel is the last update a
// test publishes, and updates reach a subscriber in publication order:
// whatever was wrongly sent to it came before the sentinel, so what came
// before is all it will ever get of them. Anything after the sentinel
// fails the test.
func (r *recorder) before(t testing.TB, sentinel string) []string {
	t.Helper()
	var got []string
	waitFor(t, "the sentinel "+sentinel, func() bool {
		got = ids(r.events(t))
		return slices.Contains(got, sentinel)
	})
	i := slices.Index(got, sentinel)
	if i != len(got)-1 {
		t.Fatalf("%v arrived after the sentinel %s", got[i+1:], sentinel)
	}
	return got[:i]
}

type fixture struct {
	t   testing.TB
	hub *hub.Hub
	eng *memory.Engine
	wg  sync.WaitGroup
}

// newFixture starts a hub over a memory engine. Call it inside the test's
// bubble: the hub's goroutines must start and end there.
// cfg.Engine, when set, replaces the memory engine (f.eng is then nil).
func newFixture(t testing.TB, cfg hub.Config) *fixture {
	t.Helper()
	f := &fixture{t: t}
	if cfg.Engine == nil {
		f.eng = memory.New(memory.Options{Retention: hub.Retention{MaxCount: 100_000}})
		cfg.Engine = f.eng
	}
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.hub = h
	t.Cleanup(func() {
		h.Close()
		f.wg.Wait()
		if c, ok := cfg.Engine.(hub.Closer); ok {
			_ = c.Close()
		}
	})
	return f
}

// stallDispatcher parks the dispatcher, as one far behind would be, until
// the returned function is called: a subscriber of the topic "p" whose
// CanRead blocks on the first private update.
func (f *fixture) stallDispatcher(ctx context.Context) (release func()) {
	f.t.Helper()
	br := &blockingReader{parked: make(chan struct{}), release: make(chan struct{})}
	f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "p")}, CanRead: br.canRead}, &recorder{})
	f.publish("p", "private", "", true)
	<-br.parked
	return func() { close(br.release) }
}

// inOrder fails unless got is "0", "1", … up to n-1.
func inOrder(t testing.TB, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d updates, want %d", len(got), n)
	}
	for i, id := range got {
		if id != fmt.Sprint(i) {
			t.Fatalf("update %d is %s", i, id)
		}
	}
}

// onTopic subscribes to one exact topic.
func (f *fixture) onTopic(topic string) hub.SubscribeOptions {
	return hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, topic)}}
}

func (f *fixture) matcher(kind hub.MatchKind, v string) *hub.Matcher {
	m, err := hub.NewMatcher(kind, v, "https://hub.example/.well-known/mercure")
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// serve subscribes and serves into a recorder in the background.
func (f *fixture) serve(ctx context.Context, o hub.SubscribeOptions, rec hub.Stream) (*hub.Subscriber, <-chan error) {
	f.t.Helper()
	s, err := f.hub.Subscribe(ctx, o)
	if err != nil {
		f.t.Fatal(err)
	}
	done := make(chan error, 1)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		done <- s.Serve(ctx, rec)
	}()
	return s, done
}

func (f *fixture) publish(topic, id, data string, private bool) *hub.Update {
	f.t.Helper()
	u, err := f.hub.Publish(context.Background(), hub.Message{ID: id, Topics: []string{topic}, Data: data, Private: private})
	if err != nil {
		f.t.Fatal(err)
	}
	return u
}

func ids(evs []sse.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func TestLiveDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		rec := &recorder{}
		f.serve(t.Context(), f.onTopic("a"), rec)
		f.publish("b", "x0", "not for us", false)
		f.publish("a", "x1", "line1\nline2", false)
		f.publish("a", "sentinel", "", false)
		if got := rec.before(t, "sentinel"); fmt.Sprint(got) != "[x1]" {
			t.Fatalf("got %v, want [x1]", got)
		}
		if ev := rec.events(t)[0]; ev.Data != "line1\nline2" {
			t.Fatalf("got %+v", ev)
		}
	})
}

func TestGeneratedIDs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		a := f.publish("a", "", "", false)
		b := f.publish("a", "", "", false) // the same millisecond: the bubble's clock stands still
		if a.ID == b.ID || len(a.ID) != len("urn:uuid:")+36 {
			t.Fatalf("ids %q %q", a.ID, b.ID)
		}
	})
}

func TestRoutingKinds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		const sentinel = "https://example.com/sentinel"
		cases := []struct {
			m    *hub.Matcher
			want []string
		}{
			{f.matcher(hub.MatchExact, "https://example.com/books/1"), []string{"1"}},
			{f.matcher(hub.MatchURLPattern, "https://example.com/books/:id"), []string{"1", "2"}},
			{f.matcher(hub.MatchURLPattern, "/local/*"), []string{"4"}},
			{f.matcher(hub.MatchSelector, "https://example.com/books/{id}"), []string{"1", "2"}},
			{f.matcher(hub.MatchSelector, "https://example.com/authors/3"), []string{"3"}},
			{f.matcher(hub.MatchExact, "*"), []string{"1", "2", "3", "4"}},
		}
		recs := make([]*recorder, len(cases))
		for i, c := range cases {
			recs[i] = &recorder{}
			// The sentinel's own matcher, beside the one under test.
			f.serve(t.Context(), hub.SubscribeOptions{Matchers: []*hub.Matcher{c.m, f.matcher(hub.MatchExact, sentinel)}}, recs[i])
		}
		f.publish("https://example.com/books/1", "1", "", false)
		f.publish("https://example.com/books/2", "2", "", false)
		f.publish("https://example.com/authors/3", "3", "", false)
		f.publish("https://hub.example/local/x", "4", "", false)
		f.publish(sentinel, "sentinel", "", false)
		for i, c := range cases {
			if got := recs[i].before(t, "sentinel"); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("%s %q: got %v, want %v", c.m.Kind(), c.m.Value(), got, c.want)
			}
		}
	})
}

func TestAlternateTopicDeliveredOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		ctx := t.Context()
		rec := &recorder{}
		f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{
			f.matcher(hub.MatchExact, "a"), f.matcher(hub.MatchExact, "b"), f.matcher(hub.MatchExact, "*"),
		}}, rec)
		if _, err := f.hub.Publish(ctx, hub.Message{ID: "1", Topics: []string{"a", "b"}}); err != nil {
			t.Fatal(err)
		}
		f.publish("c", "2", "", false)
		f.publish("c", "sentinel", "", false)
		if got := rec.before(t, "sentinel"); fmt.Sprint(got) != "[1 2]" {
			t.Fatalf("got %v", got)
		}
	})
}

func TestPrivateUpdates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		ctx := t.Context()
		all := []*hub.Matcher{f.matcher(hub.MatchExact, "*")}
		allowed := func(topics []string) bool {
			return slices.Contains(topics, "mine")
		}
		anon, authz := &recorder{}, &recorder{}
		f.serve(ctx, hub.SubscribeOptions{Matchers: all}, anon)
		f.serve(ctx, hub.SubscribeOptions{Matchers: all, CanRead: allowed}, authz)
		f.publish("mine", "p1", "", true)
		f.publish("other", "p2", "", true)
		f.publish("other", "pub", "", false)
		f.publish("other", "s1", "", false)
		if got := anon.before(t, "s1"); fmt.Sprint(got) != "[pub]" {
			t.Errorf("anonymous got %v", got)
		}
		if got := authz.before(t, "s1"); fmt.Sprint(got) != "[p1 pub]" {
			t.Errorf("authorized got %v", got)
		}
		// Replay applies the same rule.
		replayed := &recorder{}
		f.serve(ctx, hub.SubscribeOptions{Matchers: all, Resume: true, LastEventID: hub.EarliestID}, replayed)
		f.publish("other", "s2", "", false)
		if got := replayed.before(t, "s2"); fmt.Sprint(got) != "[pub s1]" {
			t.Errorf("anonymous replay got %v", got)
		}
	})
}

// TestReplayHandover resumes while publishes keep coming and checks that
// the subscriber gets every update after its cursor exactly once, in order.
func TestReplayHandover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{ReplayBatch: 7})
		ctx := t.Context()
		for i := range 200 {
			f.publish("t", fmt.Sprint(i), "", false)
		}
		const more = 2000
		var pubs sync.WaitGroup
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := 200; i < 200+more; i++ {
				if _, err := f.hub.Publish(ctx, hub.Message{ID: fmt.Sprint(i), Topics: []string{"t"}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		var recs []*recorder
		for _, from := range []string{"49", "150", hub.EarliestID} {
			rec := &recorder{}
			recs = append(recs, rec)
			s, _ := f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: from}, rec)
			if s.ResumedFrom() != from {
				t.Errorf("ResumedFrom = %q, want %q", s.ResumedFrom(), from)
			}
		}
		pubs.Wait()
		f.publish("t", "sentinel", "", false)
		for i, start := range []int{50, 151, 0} {
			got := recs[i].before(t, "sentinel")
			if want := 200 + more - start; len(got) != want {
				t.Fatalf("from %d: got %d events, want %d", start, len(got), want)
			}
			for j, id := range got {
				if id != fmt.Sprint(start+j) {
					t.Fatalf("from %d: event %d is %s, want %d", start, j, id, start+j)
				}
			}
		}
	})
}

func TestUnknownIDGoesLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		ctx := t.Context()
		first := &recorder{}
		f.serve(ctx, f.onTopic("t"), first)
		f.publish("t", "old", "", false)
		if got := first.before(t, "old"); len(got) != 0 {
			t.Fatalf("got %v before the first update", got)
		}
		rec := &recorder{}
		s, _ := f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "nope"}, rec)
		if s.ResumedFrom() != hub.EarliestID {
			t.Fatalf("ResumedFrom = %q", s.ResumedFrom())
		}
		f.publish("t", "new", "", false)
		f.publish("t", "sentinel", "", false)
		if got := rec.before(t, "sentinel"); fmt.Sprint(got) != "[new]" {
			t.Fatalf("got %v, want [new]", got)
		}
	})
}

func TestSlowSubscriberIsDisconnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{QueueBytes: 4096})
		ctx := t.Context()
		release := make(chan struct{})
		stuck := &recorder{block: release}
		prompt := &recorder{}
		_, stuckDone := f.serve(ctx, f.onTopic("t"), stuck)
		f.serve(ctx, f.onTopic("t"), prompt)
		payload := strings.Repeat("x", 500)
		for i := range 40 {
			f.publish("t", fmt.Sprint(i), payload, false)
			// Lockstep: the prompt reader keeps up, the stuck one cannot.
			waitFor(t, "the prompt subscriber", func() bool { return len(prompt.events(t)) == i+1 })
		}
		// The stuck writer is parked in Write with its first batch; the queue
		// behind it overflowed, so once the write returns the subscription ends
		// with what it had queued, and a resume would fetch the rest.
		close(release)
		if err := endOf(t, "the slow subscriber", stuckDone); !errors.Is(err, hub.ErrSlowSubscriber) {
			t.Fatalf("Serve returned %v", err)
		}
		got := ids(stuck.events(t))
		if len(got) == 0 || len(got) >= 40 {
			t.Fatalf("stuck subscriber got %d events before the cut", len(got))
		}
		for i, id := range got {
			if id != fmt.Sprint(i) {
				t.Fatalf("event %d is %s: a cut must be a prefix", i, id)
			}
		}
	})
}

// TestExpiryEndsStream: the stream ends at its token's expiry, to the
// nanosecond, and not before.
func TestExpiryEndsStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		expires := time.Now().Add(50 * time.Millisecond)
		_, done := f.serve(t.Context(), hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Expires: expires}, &recorder{})
		time.Sleep(time.Until(expires) - time.Nanosecond)
		waitFor(t, "the stream open a nanosecond before its expiry", func() bool { return len(done) == 0 })
		time.Sleep(time.Nanosecond)
		if err := endOf(t, "the stream at its expiry", done); !errors.Is(err, hub.ErrExpired) {
			t.Fatalf("Serve returned %v", err)
		}
	})
}

// TestHeartbeat: an idle stream gets a heartbeat once it has been idle
// for the heartbeat interval and not a nanosecond before, at the clock's
// first visit after that (it visits every stream once per the shorter of
// the heartbeat and liveness intervals); a write restarts the count.
func TestHeartbeat(t *testing.T) {
	for _, c := range []struct {
		name                string
		heartbeat, liveness time.Duration // as configured
		every, visit        time.Duration // what they come to
	}{
		{"no liveness", time.Second, -1, time.Second, time.Second},
		{"liveness shorter", time.Second, 250 * time.Millisecond, time.Second, 250 * time.Millisecond},
		{"liveness longer", time.Second, 3 * time.Second, time.Second, time.Second},
		{"defaults", 0, 0, 15 * time.Second, 2 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, hub.Config{Heartbeat: c.heartbeat, Liveness: c.liveness})
				rec := &recorder{}
				start := time.Now()
				f.serve(t.Context(), f.onTopic("t"), rec)
				// The first heartbeat, at the first visit once the stream
				// has been idle for the interval.
				time.Sleep(c.every + c.visit)
				waitFor(t, "the first heartbeat", func() bool { return len(rec.flushes()) > 0 })
				first := rec.flushes()[0].at
				if idle := first.Sub(start); idle < c.every || idle >= c.every+c.visit {
					t.Fatalf("first heartbeat after %v idle, want in [%v, %v)", idle, c.every, c.every+c.visit)
				}
				// An update a nanosecond after the next visit: at the visit
				// that follows the interval it has been idle a nanosecond
				// short, so the heartbeat waits one visit more.
				published := first.Add(c.visit + time.Nanosecond)
				time.Sleep(time.Until(published))
				f.publish("t", "1", "", false)
				time.Sleep(3 * c.every)
				synctest.Wait()

				var last time.Time
				beats := 0
				for i, fl := range rec.flushes() {
					if fl.data != sse.Heartbeat {
						// The update, written at once.
						if evs := parse([]byte(fl.data)); len(evs) != 1 || evs[0].ID != "1" || !fl.at.Equal(published) {
							t.Fatalf("flush %q at %v, want update 1 at %v", fl.data, fl.at.Sub(start), published.Sub(start))
						}
						last = fl.at
						continue
					}
					var want time.Duration
					switch {
					case i == 0:
						want = first.Sub(start)
					case last.Equal(published):
						want = roundUp(c.every+time.Nanosecond, c.visit) - time.Nanosecond
					default:
						want = roundUp(c.every, c.visit)
					}
					if idle := fl.at.Sub(last); i > 0 && idle != want {
						t.Errorf("heartbeat %v after the last write, want %v", idle, want)
					}
					last = fl.at
					beats++
				}
				if idle := time.Since(last); idle >= c.every+c.visit {
					t.Errorf("no heartbeat in the last %v", idle)
				}
				if beats < 3 {
					t.Errorf("%d heartbeats in %v", beats, time.Since(start))
				}
			})
		})
	}
}

// roundUp rounds d up to a multiple of m.
func roundUp(d, m time.Duration) time.Duration { return (d + m - 1) / m * m }

func TestCloseEndsStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		ctx := t.Context()
		_, done := f.serve(ctx, f.onTopic("t"), &recorder{})
		f.hub.EndStreams()
		if err := endOf(t, "the stream", done); !errors.Is(err, hub.ErrShutdown) {
			t.Fatalf("Serve returned %v", err)
		}
		if _, err := f.hub.Subscribe(ctx, hub.SubscribeOptions{}); !errors.Is(err, hub.ErrShutdown) {
			t.Fatalf("Subscribe after EndStreams: %v", err)
		}
		// Publishing still works until Close: in-flight publishes finish.
		f.publish("t", "late", "", false)
	})
}

// probed is a recorder whose peer can be made to leave. It records when
// it was probed.
type probed struct {
	recorder
	gone atomic.Bool

	pmu    sync.Mutex
	probes []time.Time
}

func (p *probed) Alive() bool {
	p.pmu.Lock()
	p.probes = append(p.probes, time.Now())
	p.pmu.Unlock()
	return !p.gone.Load()
}

func (p *probed) probeTimes() []time.Time {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	return slices.Clone(p.probes)
}

// TestProbeEndsDepartedSubscriber: a stream whose peer left ends with
// ErrGone at the first probe after it left, at most Liveness later, and
// not while the peer is there.
func TestProbeEndsDepartedSubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const liveness = 32 * time.Millisecond
		f := newFixture(t, hub.Config{Liveness: liveness})
		p := &probed{}
		_, done := f.serve(t.Context(), f.onTopic("t"), p)
		// Three probes (the clock visits one slot per 2ms tick, each slot
		// once per 32ms), and off the ticks, so that no probe is due as the
		// peer leaves.
		time.Sleep(3*liveness + time.Millisecond)
		waitFor(t, "the stream open while its peer is there", func() bool { return len(done) == 0 })
		if n := len(p.probeTimes()); n != 3 {
			t.Fatalf("%d probes in 97ms at a liveness of %v, want 3", n, liveness)
		}
		left := time.Now()
		p.gone.Store(true)
		time.Sleep(liveness)
		if err := endOf(t, "the departed subscriber's stream", done); !errors.Is(err, hub.ErrGone) {
			t.Fatalf("Serve returned %v", err)
		}
		probes := p.probeTimes()
		if n := len(probes); n != 4 {
			t.Fatalf("%d probes, want 3 while there and the one that found it gone", n)
		}
		if d := probes[3].Sub(left); d <= 0 || d > liveness {
			t.Fatalf("departure noticed %v after it, want within %v", d, liveness)
		}
	})
}

// TestProbeEveryLiveness: each stream is probed once per Liveness, not on
// every visit of the clock (which comes once per the shorter of Heartbeat
// and Liveness), and the probes of one stream are exactly Liveness apart.
func TestProbeEveryLiveness(t *testing.T) {
	for _, c := range []struct {
		name                string
		heartbeat, liveness time.Duration
	}{
		{"heartbeat shorter", time.Second, 3 * time.Second},
		{"heartbeat shorter, not a multiple", time.Second, 2500 * time.Millisecond},
		{"same", time.Second, time.Second},
		{"no heartbeat", -1, 2 * time.Second},
		{"defaults", 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, hub.Config{Heartbeat: c.heartbeat, Liveness: c.liveness})
				liveness := c.liveness
				if liveness == 0 {
					liveness = 2 * time.Second
				}
				p := &probed{}
				start := time.Now()
				f.serve(t.Context(), f.onTopic("t"), p)
				// The clock ticks a whole number of milliseconds (or
				// halves) apart: a millisecond more keeps the end off them.
				time.Sleep(10*liveness + time.Millisecond)
				synctest.Wait()
				probes := p.probeTimes()
				if len(probes) != 10 {
					t.Fatalf("%d probes in %v at a liveness of %v, want 10", len(probes), time.Since(start), liveness)
				}
				if first := probes[0].Sub(start); first <= 0 || first > liveness {
					t.Errorf("first probe %v after the subscription, want within %v", first, liveness)
				}
				for i := 1; i < len(probes); i++ {
					if d := probes[i].Sub(probes[i-1]); d != liveness {
						t.Errorf("probes %d and %d are %v apart, want %v", i-1, i, d, liveness)
					}
				}
			})
		})
	}
}

// TestWriteDelay: the first update after a quiet spell goes out at once;
// updates that come within WriteDelay of the last write wait until exactly
// WriteDelay after it and go out together in one flush; cancelling the
// stream during the wait ends it at once, with nothing written.
func TestWriteDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay = 300 * time.Millisecond
		f := newFixture(t, hub.Config{Heartbeat: -1, WriteDelay: delay})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		rec := &recorder{}
		_, done := f.serve(ctx, f.onTopic("t"), rec)
		time.Sleep(delay) // a quiet spell: the next update goes at once

		first := time.Now()
		f.publish("t", "1", "one", false)
		waitFor(t, "the first update, at once", func() bool {
			fl := rec.flushes()
			return len(fl) == 1 && fl[0].at.Equal(first) && len(parse([]byte(fl[0].data))) == 1
		})
		for i := 2; i <= 5; i++ {
			f.publish("t", fmt.Sprint(i), "more", false)
		}
		time.Sleep(delay - time.Nanosecond)
		waitFor(t, "the other four held", func() bool { return len(rec.flushes()) == 1 })
		time.Sleep(time.Nanosecond)
		waitFor(t, "the other four in one flush, the delay after the first", func() bool {
			fl := rec.flushes()
			return len(fl) == 2 && fl[1].at.Equal(first.Add(delay)) && fmt.Sprint(ids(parse([]byte(fl[1].data)))) == "[2 3 4 5]"
		})

		// Cancelled while waiting: Serve returns at once.
		f.publish("t", "6", "six", false)
		time.Sleep(20 * time.Millisecond)
		cancel()
		if err := endOf(t, "the cancelled stream", done); !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve returned %v", err)
		}
		if n := len(rec.flushes()); n != 2 {
			t.Fatalf("%d flushes; the update held when the stream was cancelled went out", n)
		}
	})
}

// TestWriteDelayByLoad: with the default (automatic) delay, a hub whose
// offered rate crosses the thresholds starts holding a busy stream's
// updates and sending them together; before that it writes at once.
func TestWriteDelayByLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const top = 300 * time.Millisecond
		f := newFixture(t, hub.Config{Heartbeat: -1})
		hub.SetPace(f.hub, 0.001, 0.002, top) // any sustained traffic is "busy", however many cores
		rec := &recorder{}
		f.serve(t.Context(), f.onTopic("t"), rec)

		start := time.Now()
		f.publish("t", "1", "one", false)
		waitFor(t, "the first update, at once", func() bool {
			fl := rec.flushes()
			return len(fl) == 1 && fl[0].at.Equal(start)
		})
		if d := f.hub.WriteDelay(); d != 0 {
			t.Errorf("WriteDelay %v before a window has passed", d)
		}
		// A window passes: 2 frames in 300ms is over the threshold. The
		// writer may read the delay before or after the dispatcher raises
		// it for this update; either way the last write is a whole delay
		// back, so the update goes at once.
		time.Sleep(top)
		second := time.Now()
		f.publish("t", "2", "two", false)
		waitFor(t, "the second update, at once", func() bool {
			fl := rec.flushes()
			return len(fl) == 2 && fl[1].at.Equal(second)
		})
		if d := f.hub.WriteDelay(); d != top {
			t.Fatalf("WriteDelay %v after a busy window, want %v", d, top)
		}
		for i := 3; i <= 5; i++ {
			f.publish("t", fmt.Sprint(i), "more", false)
		}
		time.Sleep(top - time.Nanosecond)
		waitFor(t, "the other three held", func() bool { return len(rec.flushes()) == 2 })
		time.Sleep(time.Nanosecond)
		waitFor(t, "the other three in one flush, the delay after the second", func() bool {
			fl := rec.flushes()
			return len(fl) == 3 && fl[2].at.Equal(second.Add(top)) && fmt.Sprint(ids(parse([]byte(fl[2].data)))) == "[3 4 5]"
		})
	})
}

// TestWriteDelayClockStepsBack: the wait before a paced write is capped at
// the delay, so a wall clock stepped back (lastWrite is wall time) cannot
// stall a stream: the update goes out exactly the delay after it came.
func TestWriteDelayClockStepsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay = 100 * time.Millisecond
		var back atomic.Int64 // how far the hub's clock is behind
		now := func() time.Time { return time.Now().Add(-time.Duration(back.Load())) }
		f := newFixture(t, hub.Config{Heartbeat: -1, WriteDelay: delay, Now: now})
		rec := &recorder{}
		f.serve(t.Context(), f.onTopic("t"), rec)
		time.Sleep(delay)
		f.publish("t", "1", "one", false)
		waitFor(t, "the first update", func() bool { return len(rec.flushes()) == 1 })

		time.Sleep(delay / 4)
		back.Store(int64(time.Hour))
		came := time.Now()
		f.publish("t", "2", "two", false)
		time.Sleep(2 * delay)
		waitFor(t, "the update after the step", func() bool { return len(rec.flushes()) == 2 })
		if at := rec.flushes()[1].at; !at.Equal(came.Add(delay)) {
			t.Errorf("update after the clock stepped back an hour went out %v after it came; the wait should be capped at %v", at.Sub(came), delay)
		}
	})
}

// hookEngine runs afterLookup once a Lookup has answered, to move the
// history between a resume's lookup and its first read.
type hookEngine struct {
	*memory.Engine
	afterLookup func()
}

func (e *hookEngine) Lookup(ctx context.Context, id string) (hub.Position, bool, error) {
	pos, ok, err := e.Engine.Lookup(ctx, id)
	if e.afterLookup != nil {
		e.afterLookup()
	}
	return pos, ok, err
}

// TestResumeTrimmedAfterLookup: retention drops what follows the resume
// point between the lookup and the first read; the response must not
// claim an exact resume.
func TestResumeTrimmedAfterLookup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 3}})
		eng := &hookEngine{Engine: mem}
		h, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		defer h.Close()
		ctx := t.Context()
		pub := func(id string) {
			if _, err := h.Publish(ctx, hub.Message{ID: id, Topics: []string{"t"}}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			pub(fmt.Sprint(i))
		}
		m, _ := hub.NewMatcher(hub.MatchExact, "t", "")
		o := hub.SubscribeOptions{Matchers: []*hub.Matcher{m}, Resume: true, LastEventID: "0"}
		// Exact while nothing moves.
		s, err := h.Subscribe(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if s.ResumedFrom() != "0" {
			t.Fatalf("ResumedFrom = %q, want 0", s.ResumedFrom())
		}
		s.Close()
		// Three more push 0, 1 and 2 out after the lookup found 0.
		eng.afterLookup = func() {
			eng.afterLookup = nil
			for i := 3; i < 6; i++ {
				pub(fmt.Sprint(i))
			}
		}
		s, err = h.Subscribe(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if s.ResumedFrom() != hub.EarliestID {
			t.Fatalf("ResumedFrom = %q after the range was trimmed; want %q", s.ResumedFrom(), hub.EarliestID)
		}
		rec := &recorder{}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Serve(sctx, rec) }()
		pub("sentinel")
		if got := fmt.Sprint(rec.before(t, "sentinel")); got != "[3 4 5]" {
			t.Fatalf("got %v, want what was retained, then live", got)
		}
		cancel()
		if err := endOf(t, "the stream", done); !errors.Is(err, context.Canceled) {
			t.Fatalf("Serve returned %v", err)
		}
	})
}

// blockingReader is a CanRead that parks the dispatcher on its first
// private update until released: a stand-in for a dispatcher that fell
// far behind.
type blockingReader struct {
	parked  chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingReader) canRead([]string) bool {
	b.once.Do(func() {
		close(b.parked)
		<-b.release
	})
	return true
}

// TestDispatcherBehindReadsBack: while the dispatcher is stuck, the feed
// keeps handing over without waiting (publishes return), drops what does
// not fit, and the dispatcher reads it back from the history: nothing is
// lost and nothing repeats.
func TestDispatcherBehindReadsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{InboxBytes: 512, Heartbeat: -1})
		ctx := t.Context()
		rec := &recorder{}
		f.serve(ctx, f.onTopic("t"), rec)
		release := f.stallDispatcher(ctx)
		for i := range 200 { // far more than 512 bytes of frames
			f.publish("t", fmt.Sprint(i), "", false)
		}
		release()
		f.publish("t", "sentinel", "", false)
		inOrder(t, rec.before(t, "sentinel"), 200)
	})
}

// TestDispatcherGapEndsLive: the dispatcher falls behind by more than the
// history keeps; the live subscribers that may have missed an update end
// with ErrLost instead of skipping silently, and new ones work.
func TestDispatcherGapEndsLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 5}})
		f := newFixture(t, hub.Config{Engine: eng, InboxBytes: 512, Heartbeat: -1})
		ctx := t.Context()
		_, live := f.serve(ctx, f.onTopic("t"), &recorder{})
		release := f.stallDispatcher(ctx)
		for i := range 100 {
			f.publish("t", fmt.Sprint(i), "", false)
		}
		release()
		if err := endOf(t, "the live subscriber after the dispatcher skipped trimmed updates", live); !errors.Is(err, hub.ErrLost) {
			t.Fatalf("live subscriber ended with %v, want ErrLost", err)
		}
		rec := &recorder{}
		f.serve(ctx, f.onTopic("t"), rec)
		f.publish("t", "after", "", false)
		if got := rec.before(t, "after"); len(got) != 0 {
			t.Fatalf("a new subscriber got %v before its first update", got)
		}
	})
}

// TestLostLogEndsStreams: the engine reports a new epoch (its log was
// replaced); every stream ends with ErrLost, a resume from an id of the
// old log is told earliest, and the hub goes on in the new log.
func TestLostLogEndsStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{Heartbeat: -1})
		ctx := t.Context()
		f.publish("t", "old-1", "", false)
		f.publish("t", "old-2", "", false)
		_, live := f.serve(ctx, f.onTopic("t"), &recorder{})
		// A replay parked in its first write while the log is replaced.
		release := make(chan struct{})
		_, replaying := f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "old-1"}, &recorder{block: release})
		f.eng.Reset()
		if err := endOf(t, "the live stream", live); !errors.Is(err, hub.ErrLost) {
			t.Fatalf("live: Serve returned %v, want ErrLost", err)
		}
		close(release)
		if err := endOf(t, "the replaying stream", replaying); !errors.Is(err, hub.ErrLost) {
			t.Fatalf("replaying: Serve returned %v, want ErrLost", err)
		}
		rec := &recorder{}
		s, _ := f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "old-2"}, rec)
		if s.ResumedFrom() != hub.EarliestID {
			t.Fatalf("resume from an id of the lost log: ResumedFrom %q, want earliest", s.ResumedFrom())
		}
		u := f.publish("t", "new-1", "", false)
		if u.Seq != 1 {
			t.Fatalf("first update of the new log has Seq %d", u.Seq)
		}
		if got := rec.before(t, "new-1"); len(got) != 0 {
			t.Fatalf("got %v before the new log's first update", got)
		}
	})
}

// flakyEngine fails its next reads while failures is above zero.
type flakyEngine struct {
	*memory.Engine
	failures atomic.Int32
	reads    atomic.Int32
}

func (e *flakyEngine) Read(ctx context.Context, after hub.Position, limit int) (hub.Range, error) {
	e.reads.Add(1)
	if e.failures.Add(-1) >= 0 {
		return hub.Range{}, errors.New("history unreachable")
	}
	return e.Engine.Read(ctx, after, limit)
}

// TestCatchUpRetriesReads: the dispatcher fell behind the feed and its
// reads of the history fail for a while: it retries, backing off, and
// then delivers everything, in order, to the subscribers that stayed;
// nothing is skipped and nobody is ended.
func TestCatchUpRetriesReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := &flakyEngine{Engine: memory.New(memory.Options{})}
		f := newFixture(t, hub.Config{Engine: eng, InboxBytes: 512, Heartbeat: -1})
		ctx := t.Context()
		rec := &recorder{}
		_, live := f.serve(ctx, f.onTopic("t"), rec)
		release := f.stallDispatcher(ctx)
		for i := range 100 {
			f.publish("t", fmt.Sprint(i), "", false)
		}
		eng.failures.Store(5)
		release()
		synctest.Wait()
		if n := eng.reads.Load(); n != 1 {
			t.Fatalf("%d reads before the first retry is due, want 1", n)
		}
		time.Sleep(10 * time.Second) // well past every backoff
		f.publish("t", "sentinel", "", false)
		inOrder(t, rec.before(t, "sentinel"), 100)
		if n := eng.reads.Load(); n < 6 {
			t.Fatalf("%d reads: the failed ones were not retried", n)
		}
		select {
		case err := <-live:
			t.Fatalf("live subscriber ended: %v", err)
		default:
		}
	})
}

// TestEarliestOverExpiredHistory: retention has dropped every update; a
// client asking for "earliest" is told so and goes live, instead of
// being ended for the loss on every reconnection.
func TestEarliestOverExpiredHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := memory.New(memory.Options{Retention: hub.Retention{MaxAge: time.Minute}})
		h, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close(); _ = eng.Close() })
		ctx := t.Context()
		for i := range 3 {
			if _, err := h.Publish(ctx, hub.Message{ID: fmt.Sprint(i), Topics: []string{"t"}}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * time.Minute) // every update expires
		m, _ := hub.NewMatcher(hub.MatchExact, "t", "")
		s, err := h.Subscribe(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{m}, Resume: true, LastEventID: hub.EarliestID})
		if err != nil {
			t.Fatal(err)
		}
		if s.ResumedFrom() != hub.EarliestID {
			t.Fatalf("ResumedFrom %q", s.ResumedFrom())
		}
		rec := &recorder{}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, rec) }()
		if _, err := h.Publish(ctx, hub.Message{ID: "sentinel", Topics: []string{"t"}}); err != nil {
			t.Fatal(err)
		}
		if got := rec.before(t, "sentinel"); len(got) != 0 {
			t.Fatalf("got %v before the sentinel, want nothing", got)
		}
		select {
		case err := <-done:
			t.Fatalf("Serve ended: %v", err)
		default:
		}
	})
}

// TestUnknownIDAfterLostLog: after the log was replaced, an id the hub
// does not know may be one of the lost log's. The client is told earliest
// and gets everything of the new log, including what was published before
// it came back.
func TestUnknownIDAfterLostLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		ctx := t.Context()
		f.publish("t", "old", "", false)
		f.eng.Reset()
		synctest.Wait() // the dispatcher has met the new epoch
		f.publish("t", "early", "", false)
		rec := &recorder{}
		s, _ := f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "old"}, rec)
		if s.ResumedFrom() != hub.EarliestID {
			t.Fatalf("ResumedFrom = %q, want earliest", s.ResumedFrom())
		}
		f.publish("t", "sentinel", "", false)
		if got := rec.before(t, "sentinel"); fmt.Sprint(got) != "[early]" {
			t.Fatalf("got %v, want [early]", got)
		}
	})
}

// LastEventID is the id of the last update dispatched: earliest before
// any, the dispatcher's own after a publish, the history's for a hub that
// starts over a log it did not dispatch, earliest again in a new log.
func TestLastEventID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := memory.New(memory.Options{})
		defer eng.Close()
		f := newFixture(t, hub.Config{Engine: eng})
		last := func(h *hub.Hub) string {
			t.Helper()
			synctest.Wait()
			id, err := h.LastEventID(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		if got := last(f.hub); got != hub.EarliestID {
			t.Fatalf("empty history: %q", got)
		}
		f.publish("a", "x1", "", false)
		f.publish("b", "x2", "", true)
		if got := last(f.hub); got != "x2" {
			t.Fatalf("after two publishes: %q, want x2", got)
		}
		f.hub.Close()
		h2, err := hub.New(hub.Config{Engine: eng})
		if err != nil {
			t.Fatal(err)
		}
		defer h2.Close()
		if got := last(h2); got != "x2" {
			t.Fatalf("a hub started over the history: %q, want x2", got)
		}
		eng.Reset()
		if got := last(h2); got != hub.EarliestID {
			t.Fatalf("after the log was replaced: %q, want earliest", got)
		}
	})
}
