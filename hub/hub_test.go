package hub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/sse"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a hub.Stream that keeps what was flushed.
type recorder struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	flushed []byte
	block   chan struct{} // when non-nil, the first Write waits for it
	flushes int
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
	r.buf.Reset()
	r.flushes++
	return nil
}

func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

func (r *recorder) flushCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flushes
}

func (r *recorder) events(t testing.TB) []sse.Event {
	t.Helper()
	r.mu.Lock()
	data := append([]byte(nil), r.flushed...)
	r.mu.Unlock()
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

func (r *recorder) raw() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.flushed)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type fixture struct {
	t   testing.TB
	hub *hub.Hub
	eng *memory.Engine
	wg  sync.WaitGroup
}

func newFixture(t testing.TB, cfg hub.Config) *fixture {
	t.Helper()
	eng := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 100_000}})
	cfg.Engine = eng
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, hub: h, eng: eng}
	t.Cleanup(func() {
		h.Close()
		f.wg.Wait()
		_ = eng.Close()
	})
	return f
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
	f := newFixture(t, hub.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "a")}}, rec)
	f.publish("b", "x0", "not for us", false)
	f.publish("a", "x1", "line1\nline2", false)
	waitFor(t, "event", func() bool { return len(rec.events(t)) == 1 })
	ev := rec.events(t)[0]
	if ev.ID != "x1" || ev.Data != "line1\nline2" {
		t.Fatalf("got %+v", ev)
	}
}

func TestGeneratedIDs(t *testing.T) {
	f := newFixture(t, hub.Config{})
	a := f.publish("a", "", "", false)
	b := f.publish("a", "", "", false)
	if a.ID == b.ID || len(a.ID) != len("urn:uuid:")+36 {
		t.Fatalf("ids %q %q", a.ID, b.ID)
	}
}

func TestRoutingKinds(t *testing.T) {
	f := newFixture(t, hub.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
		f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{c.m}}, recs[i])
	}
	f.publish("https://example.com/books/1", "1", "", false)
	f.publish("https://example.com/books/2", "2", "", false)
	f.publish("https://example.com/authors/3", "3", "", false)
	f.publish("https://hub.example/local/x", "4", "", false)
	for i, c := range cases {
		waitFor(t, "deliveries", func() bool { return len(recs[i].events(t)) >= len(c.want) })
		time.Sleep(20 * time.Millisecond) // let a wrong extra delivery show up
		if got := ids(recs[i].events(t)); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s %q: got %v, want %v", c.m.Kind(), c.m.Value(), got, c.want)
		}
	}
}

func TestAlternateTopicDeliveredOnce(t *testing.T) {
	f := newFixture(t, hub.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{
		f.matcher(hub.MatchExact, "a"), f.matcher(hub.MatchExact, "b"), f.matcher(hub.MatchExact, "*"),
	}}, rec)
	if _, err := f.hub.Publish(ctx, hub.Message{ID: "1", Topics: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	f.publish("c", "2", "", false)
	waitFor(t, "2 events", func() bool { return len(rec.events(t)) == 2 })
	time.Sleep(20 * time.Millisecond)
	if got := ids(rec.events(t)); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("got %v", got)
	}
}

func TestPrivateUpdates(t *testing.T) {
	f := newFixture(t, hub.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all := []*hub.Matcher{f.matcher(hub.MatchExact, "*")}
	allowed := func(topics []string) bool {
		for _, t := range topics {
			if t == "mine" {
				return true
			}
		}
		return false
	}
	anon, authz := &recorder{}, &recorder{}
	f.serve(ctx, hub.SubscribeOptions{Matchers: all}, anon)
	f.serve(ctx, hub.SubscribeOptions{Matchers: all, CanRead: allowed}, authz)
	f.publish("mine", "p1", "", true)
	f.publish("other", "p2", "", true)
	f.publish("other", "pub", "", false)
	waitFor(t, "anon", func() bool { return len(anon.events(t)) == 1 })
	waitFor(t, "authz", func() bool { return len(authz.events(t)) == 2 })
	time.Sleep(20 * time.Millisecond)
	if got := ids(anon.events(t)); fmt.Sprint(got) != "[pub]" {
		t.Errorf("anonymous got %v", got)
	}
	if got := ids(authz.events(t)); fmt.Sprint(got) != "[p1 pub]" {
		t.Errorf("authorized got %v", got)
	}
	// Replay applies the same rule.
	replayed := &recorder{}
	f.serve(ctx, hub.SubscribeOptions{Matchers: all, Resume: true, LastEventID: hub.EarliestID}, replayed)
	waitFor(t, "replay", func() bool { return len(replayed.events(t)) == 1 })
	if got := ids(replayed.events(t)); fmt.Sprint(got) != "[pub]" {
		t.Errorf("anonymous replay got %v", got)
	}
}

// TestReplayHandover resumes while publishes keep coming and checks that
// the subscriber gets every update after its cursor exactly once, in order.
func TestReplayHandover(t *testing.T) {
	f := newFixture(t, hub.Config{ReplayBatch: 7})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
	for i, start := range []int{50, 151, 0} {
		rec := recs[i]
		want := 200 + more - start
		waitFor(t, "all events", func() bool { return len(rec.events(t)) >= want })
		got := ids(rec.events(t))
		if len(got) != want {
			t.Fatalf("from %d: got %d events, want %d", start, len(got), want)
		}
		for j, id := range got {
			if id != fmt.Sprint(start+j) {
				t.Fatalf("from %d: event %d is %s, want %d", start, j, id, start+j)
			}
		}
	}
}

func TestUnknownIDGoesLive(t *testing.T) {
	f := newFixture(t, hub.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	probe := &recorder{}
	f.serve(ctx, f.onTopic("t"), probe)
	f.publish("t", "old", "", false)
	waitFor(t, "old dispatched", func() bool { return len(probe.events(t)) == 1 })
	rec := &recorder{}
	s, _ := f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "nope"}, rec)
	if s.ResumedFrom() != hub.EarliestID {
		t.Fatalf("ResumedFrom = %q", s.ResumedFrom())
	}
	f.publish("t", "new", "", false)
	waitFor(t, "live event", func() bool { return len(rec.events(t)) == 1 })
	if got := ids(rec.events(t)); got[0] != "new" {
		t.Fatalf("got %v", got)
	}
}

func TestSlowSubscriberIsDisconnected(t *testing.T) {
	f := newFixture(t, hub.Config{QueueBytes: 4096})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all := []*hub.Matcher{f.matcher(hub.MatchExact, "t")}
	release := make(chan struct{})
	stuck := &recorder{block: release}
	prompt := &recorder{}
	_, stuckDone := f.serve(ctx, hub.SubscribeOptions{Matchers: all}, stuck)
	f.serve(ctx, hub.SubscribeOptions{Matchers: all}, prompt)
	payload := string(bytes.Repeat([]byte("x"), 500))
	for i := range 40 {
		f.publish("t", fmt.Sprint(i), payload, false)
		// Lockstep: the prompt reader keeps up, the stuck one cannot.
		waitFor(t, "prompt subscriber", func() bool { return len(prompt.events(t)) == i+1 })
	}
	// The stuck writer is parked in Write with its first batch; the queue
	// behind it overflowed, so once the write returns the subscription ends
	// with what it had queued, and a resume would fetch the rest.
	close(release)
	select {
	case err := <-stuckDone:
		if !errors.Is(err, hub.ErrSlowSubscriber) {
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
	case <-time.After(5 * time.Second):
		t.Fatal("slow subscriber not disconnected")
	}
}

func TestExpiryEndsStream(t *testing.T) {
	f := newFixture(t, hub.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	_, done := f.serve(ctx, hub.SubscribeOptions{
		Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")},
		Expires:  time.Now().Add(50 * time.Millisecond),
	}, rec)
	select {
	case err := <-done:
		if !errors.Is(err, hub.ErrExpired) {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream not closed at expiry")
	}
}

func TestHeartbeat(t *testing.T) {
	f := newFixture(t, hub.Config{Heartbeat: 32 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	f.serve(ctx, f.onTopic("t"), rec)
	waitFor(t, "heartbeat", func() bool { return bytes.Contains([]byte(rec.raw()), sse.Heartbeat) })
}

func TestCloseEndsStreams(t *testing.T) {
	f := newFixture(t, hub.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, done := f.serve(ctx, f.onTopic("t"), &recorder{})
	f.hub.EndStreams()
	if err := <-done; !errors.Is(err, hub.ErrShutdown) {
		t.Fatalf("Serve returned %v", err)
	}
	if _, err := f.hub.Subscribe(ctx, hub.SubscribeOptions{}); !errors.Is(err, hub.ErrShutdown) {
		t.Fatalf("Subscribe after EndStreams: %v", err)
	}
	// Publishing still works until Close: in-flight publishes finish.
	f.publish("t", "late", "", false)
}

// probed is a recorder whose peer can be made to leave.
type probed struct {
	recorder
	gone atomic.Bool
}

func (p *probed) Alive() bool { return !p.gone.Load() }

func TestProbeEndsDepartedSubscriber(t *testing.T) {
	f := newFixture(t, hub.Config{Liveness: 32 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &probed{}
	_, done := f.serve(ctx, f.onTopic("t"), p)
	select {
	case err := <-done:
		t.Fatalf("ended while alive: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	p.gone.Store(true)
	select {
	case err := <-done:
		if !errors.Is(err, hub.ErrGone) {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("departed subscriber not noticed")
	}
}

// TestWriteDelay: updates that come within WriteDelay of the last write
// wait and go out together in one flush; the first after a quiet spell
// goes at once; cancelling the stream during the wait ends it at once.
func TestWriteDelay(t *testing.T) {
	const delay = 300 * time.Millisecond
	f := newFixture(t, hub.Config{Heartbeat: -1, WriteDelay: delay})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	o := f.onTopic("t")
	_, done := f.serve(ctx, o, rec)
	time.Sleep(delay) // a quiet spell: the next update goes at once

	start := time.Now()
	f.publish("t", "1", "one", false)
	waitFor(t, "the first update", func() bool { return len(rec.events(t)) == 1 })
	if d := time.Since(start); d > delay/2 {
		t.Errorf("first update after a quiet spell took %v; it should not wait", d)
	}
	for i := 2; i <= 5; i++ {
		f.publish("t", fmt.Sprint(i), "more", false)
	}
	waitFor(t, "the other four", func() bool { return len(rec.events(t)) == 5 })
	if d := time.Since(start); d < delay*9/10 {
		t.Errorf("updates right after a write went out %v after it; want them held about %v", d, delay)
	}
	flushes := rec.flushCount()
	if flushes != 2 {
		t.Errorf("%d flushes for one update and then four within the delay, want 2", flushes)
	}

	// Cancelled while waiting: Serve returns before the delay is over.
	f.publish("t", "6", "six", false)
	time.Sleep(20 * time.Millisecond)
	cancelled := time.Now()
	cancel()
	select {
	case <-done:
		if d := time.Since(cancelled); d > delay/2 {
			t.Errorf("Serve returned %v after cancel", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// TestWriteDelayByLoad: with the default (automatic) delay, a hub whose
// offered rate crosses the thresholds starts holding a busy stream's
// updates and sending them together; before that it writes at once.
func TestWriteDelayByLoad(t *testing.T) {
	const top = 300 * time.Millisecond
	f := newFixture(t, hub.Config{Heartbeat: -1})
	hub.SetPace(f.hub, 1, 2, top) // any sustained traffic is "busy"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	o := f.onTopic("t")
	f.serve(ctx, o, rec)

	start := time.Now()
	f.publish("t", "1", "one", false)
	waitFor(t, "the first update", func() bool { return len(rec.events(t)) == 1 })
	if d := time.Since(start); d > top/2 {
		t.Errorf("first update took %v with no load measured yet", d)
	}
	if d := f.hub.WriteDelay(); d != 0 {
		t.Errorf("WriteDelay %v before a window has passed", d)
	}
	time.Sleep(150 * time.Millisecond) // a window passes: 2 frames in 150ms is over 2/s
	f.publish("t", "2", "two", false)
	waitFor(t, "the second update", func() bool { return len(rec.events(t)) == 2 })
	// The dispatcher sets the delay after offering the batch that ended the
	// window, so the writer may see the update first.
	waitFor(t, "the delay to rise", func() bool { return f.hub.WriteDelay() == top })
	written := time.Now()
	for i := 3; i <= 5; i++ {
		f.publish("t", fmt.Sprint(i), "more", false)
	}
	waitFor(t, "the other three", func() bool { return len(rec.events(t)) == 5 })
	if d := time.Since(written); d < top*8/10 {
		t.Errorf("updates right after a write went out %v after it; want them held about %v", d, top)
	}
	flushes := rec.flushCount()
	// The second update may have been written before or after the delay
	// was raised, so it went out alone either way; three more share one.
	if flushes != 3 {
		t.Errorf("%d flushes for 1, 2 and then three within the delay, want 3", flushes)
	}
}

// TestWriteDelayClockStepsBack: the wait before a paced write is capped at
// the delay, so a wall clock stepped back (lastWrite is wall time) cannot
// stall a stream.
func TestWriteDelayClockStepsBack(t *testing.T) {
	const delay = 100 * time.Millisecond
	var back atomic.Int64 // how far the hub's clock is behind
	now := func() time.Time { return time.Now().Add(-time.Duration(back.Load())) }
	f := newFixture(t, hub.Config{Heartbeat: -1, WriteDelay: delay, Now: now})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	o := f.onTopic("t")
	f.serve(ctx, o, rec)
	f.publish("t", "1", "one", false)
	waitFor(t, "the first update", func() bool { return len(rec.events(t)) == 1 })

	back.Store(int64(time.Hour))
	start := time.Now()
	f.publish("t", "2", "two", false)
	waitFor(t, "the update after the step", func() bool { return len(rec.events(t)) == 2 })
	if d := time.Since(start); d > 10*delay {
		t.Errorf("update after the clock stepped back took %v; the wait should be capped at %v", d, delay)
	}
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
	waitFor(t, "the sentinel", func() bool { n := len(rec.events(t)); return n > 0 && rec.events(t)[n-1].ID == "sentinel" })
	cancel()
	<-done
	if got := fmt.Sprint(ids(rec.events(t))); got != "[3 4 5 sentinel]" {
		t.Fatalf("got %v, want what was retained, then live", got)
	}
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
	f := newFixture(t, hub.Config{InboxBytes: 512, Heartbeat: -1})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	br := &blockingReader{parked: make(chan struct{}), release: make(chan struct{})}
	stuck := &recorder{}
	f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "p")}, CanRead: br.canRead}, stuck)
	rec := &recorder{}
	f.serve(ctx, f.onTopic("t"), rec)
	f.publish("p", "private", "", true)
	<-br.parked
	for i := range 200 { // far more than 512 bytes of frames
		f.publish("t", fmt.Sprint(i), "", false)
	}
	close(br.release)
	f.publish("t", "sentinel", "", false)
	waitFor(t, "the sentinel", func() bool { evs := rec.events(t); return len(evs) > 0 && evs[len(evs)-1].ID == "sentinel" })
	got := ids(rec.events(t))
	if len(got) != 201 {
		t.Fatalf("got %d updates, want 201", len(got))
	}
	for i, id := range got[:200] {
		if id != fmt.Sprint(i) {
			t.Fatalf("update %d is %s", i, id)
		}
	}
}

// TestDispatcherGapEndsLive: the dispatcher falls behind by more than the
// history keeps; the live subscribers that may have missed an update end
// with ErrLost instead of skipping silently, and new ones work.
func TestDispatcherGapEndsLive(t *testing.T) {
	eng := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 5}})
	h, err := hub.New(hub.Config{Engine: eng, InboxBytes: 512, Heartbeat: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	defer h.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	m, _ := hub.NewMatcher(hub.MatchExact, "t", "")
	pm, _ := hub.NewMatcher(hub.MatchExact, "p", "")
	br := &blockingReader{parked: make(chan struct{}), release: make(chan struct{})}
	serve := func(o hub.SubscribeOptions, rec *recorder) chan error {
		s, err := h.Subscribe(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, rec) }()
		return done
	}
	serve(hub.SubscribeOptions{Matchers: []*hub.Matcher{pm}, CanRead: br.canRead}, &recorder{})
	live := serve(hub.SubscribeOptions{Matchers: []*hub.Matcher{m}}, &recorder{})
	pub := func(topic, id string, private bool) {
		if _, err := h.Publish(ctx, hub.Message{ID: id, Topics: []string{topic}, Private: private}); err != nil {
			t.Fatal(err)
		}
	}
	pub("p", "private", true)
	<-br.parked
	for i := range 100 {
		pub("t", fmt.Sprint(i), false)
	}
	close(br.release)
	select {
	case err := <-live:
		if !errors.Is(err, hub.ErrLost) {
			t.Fatalf("live subscriber ended with %v, want ErrLost", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("live subscriber not ended after the dispatcher skipped trimmed updates")
	}
	rec := &recorder{}
	serve(hub.SubscribeOptions{Matchers: []*hub.Matcher{m}}, rec)
	pub("t", "after", false)
	waitFor(t, "a new subscriber's update", func() bool { return len(rec.events(t)) == 1 })
}

// TestLostLogEndsStreams: the engine reports a new epoch (its log was
// replaced); every stream ends with ErrLost, a resume from an id of the
// old log is told earliest, and the hub goes on in the new log.
func TestLostLogEndsStreams(t *testing.T) {
	f := newFixture(t, hub.Config{Heartbeat: -1})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	f.publish("t", "old-1", "", false)
	f.publish("t", "old-2", "", false)
	_, live := f.serve(ctx, f.onTopic("t"), &recorder{})
	// A replay parked in its first write while the log is replaced.
	release := make(chan struct{})
	_, replaying := f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "old-1"}, &recorder{block: release})
	f.eng.Reset()
	if err := <-live; !errors.Is(err, hub.ErrLost) {
		t.Fatalf("live: Serve returned %v, want ErrLost", err)
	}
	close(release)
	if err := <-replaying; !errors.Is(err, hub.ErrLost) {
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
	waitFor(t, "the new log's update", func() bool { return len(rec.events(t)) == 1 })
}
