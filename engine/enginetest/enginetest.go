// Package enginetest is the conformance suite every hub.Engine passes: the
// executable form of the contract written on hub.Engine. An engine package
// calls Run from one test, and RunCrash from another if it is durable.
package enginetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-hub/herald/hub"
)

// Factory opens (or reopens) an engine whose files live in dir with the
// given retention. The suite calls Listen and Close itself; a Factory may
// also register Close with t.Cleanup, since Close is safe to call twice.
type Factory func(t testing.TB, dir string, r hub.Retention) hub.Engine

// Options describes the engine under test.
type Options struct {
	// Durable engines keep their history when closed and reopened on the
	// same dir. They must implement hub.Closer.
	Durable bool
	// Timeout bounds every wait for something the engine does in its own
	// time (the feed, eviction by age). Zero means 30 seconds. It is a
	// deadline against hangs, never a speed requirement.
	Timeout time.Duration
	// Faulty, when set, opens an engine like the Factory, with a switch
	// that makes its storage fail while on: appends must then fail, and
	// leave nothing behind, now or after a reopen by the Factory. Durable
	// engines fail where it hurts most: after the data reached the disk.
	Faulty func(t testing.TB, dir string, r hub.Retention) (e hub.Engine, fail func(on bool))
	// Replace, when set, replaces the log of a running engine with an
	// empty one, as a shared store does when it restarts without its
	// data or is flushed. The engine must notice, however it learns of
	// it: the feed opens a new epoch, and nothing of the old log can be
	// read or looked up any more.
	Replace func(t testing.TB, e hub.Engine)
}

// Run runs the conformance suite against the engines open returns.
func Run(t *testing.T, open Factory, opts Options) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	s := &suite{open: open, opts: opts}
	t.Run("Sequence", s.testSequence)
	t.Run("ConcurrentAppend", s.testConcurrentAppend)
	t.Run("Read", s.testRead)
	t.Run("Lookup", s.testLookup)
	t.Run("DuplicateIDs", s.testDuplicateIDs)
	t.Run("RetentionCount", s.testRetentionCount)
	t.Run("RetentionAge", s.testRetentionAge)
	t.Run("Presence", s.testPresence)
	t.Run("ContextDone", s.testContextDone)
	t.Run("Closed", s.testClosed)
	t.Run("CloseWhileBusy", s.testCloseWhileBusy)
	t.Run("Reopen", s.testReopen)
	t.Run("ReopenAfterEviction", s.testReopenAfterEviction)
	t.Run("Epoch", s.testEpoch)
	if opts.Faulty != nil {
		t.Run("FailedAppend", s.testFailedAppend)
	}
	if opts.Replace != nil {
		t.Run("LostLog", s.testLostLog)
	}
	t.Run("Handover", s.testHandover)
}

type suite struct {
	open Factory
	opts Options
}

// instance is an engine under test with a recording feed.
type instance struct {
	t    testing.TB
	s    *suite
	e    hub.Engine
	feed *recorder
	head hub.Position // what Listen returned
}

// start opens an engine in dir, registers a recording feed and arranges
// for it to be closed when the test ends.
func (s *suite) start(t testing.TB, dir string, r hub.Retention) *instance {
	t.Helper()
	return s.listen(t, s.open(t, dir, r))
}

// listen registers a recording feed on e, an engine just opened, and
// arranges for it to be closed when the test ends.
func (s *suite) listen(t testing.TB, e hub.Engine) *instance {
	t.Helper()
	rec := &recorder{e: e, ctx: context.WithoutCancel(t.Context())}
	head, err := e.Listen(rec.feed)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if head.Epoch == 0 {
		t.Fatal("Listen returned epoch 0: an epoch is never zero")
	}
	rec.epoch, rec.last = head.Epoch, head.Seq
	in := &instance{t: t, s: s, e: e, feed: rec, head: head}
	t.Cleanup(func() {
		in.close()
		rec.check(t)
	})
	return in
}

func (in *instance) close() {
	in.t.Helper()
	if c, ok := in.e.(hub.Closer); ok {
		if err := c.Close(); err != nil {
			in.t.Errorf("Close: %v", err)
		}
	}
}

func (in *instance) append(u *hub.Update) *hub.Update {
	in.t.Helper()
	if err := in.e.Append(in.t.Context(), u); err != nil {
		in.t.Fatalf("Append(%q): %v", u.ID, err)
	}
	return u
}

// appendIDs appends NewUpdate(id) for each id and returns the updates.
func (in *instance) appendIDs(ids ...string) []*hub.Update {
	in.t.Helper()
	out := make([]*hub.Update, len(ids))
	for i, id := range ids {
		out[i] = in.append(NewUpdate(id))
	}
	return out
}

func (in *instance) lookup(id string) (uint64, bool) {
	in.t.Helper()
	pos, ok, err := in.e.Lookup(in.t.Context(), id)
	if err != nil {
		in.t.Fatalf("Lookup(%q): %v", id, err)
	}
	if ok && pos.Epoch != in.head.Epoch {
		in.t.Fatalf("Lookup(%q) in epoch %d, the log's is %d", id, pos.Epoch, in.head.Epoch)
	}
	return pos.Seq, ok
}

func (in *instance) read(after uint64, limit int) []*hub.Update {
	in.t.Helper()
	return in.readRange(after, limit).Updates
}

// readRange reads and checks what holds of every Range: order, the limit,
// a Head at least as far as what was returned, and a Gap exactly where
// Seqs jump (Seqs take every position, so a jump is a dropped update). It
// is for logs without presence updates, which testPresence checks.
func (in *instance) readRange(after uint64, limit int) hub.Range {
	in.t.Helper()
	r, err := in.e.Read(in.t.Context(), hub.Position{Epoch: in.head.Epoch, Seq: after}, limit)
	if err != nil {
		in.t.Fatalf("Read(%d, %d): %v", after, limit, err)
	}
	us := r.Updates
	if len(us) > limit {
		in.t.Fatalf("Read(%d, %d) returned %d updates", after, limit, len(us))
	}
	prev := after
	for i, u := range us {
		if u.Seq <= prev || i > 0 && u.Seq != prev+1 {
			in.t.Fatalf("Read(%d, %d) returned Seqs %v: want increasing without holes", after, limit, seqs(us))
		}
		prev = u.Seq
	}
	if len(us) > 0 && r.Head < prev {
		in.t.Fatalf("Read(%d, %d): Head %d before the last update returned (%d)", after, limit, r.Head, prev)
	}
	wantGap := len(us) > 0 && us[0].Seq > after+1 || len(us) == 0 && r.Head > after
	if r.Gap != wantGap {
		in.t.Fatalf("Read(%d, %d) = Seqs %v, Head %d: Gap %v, want %v", after, limit, seqs(us), r.Head, r.Gap, wantGap)
	}
	if r.PresenceGap {
		in.t.Fatalf("Read(%d, %d): PresenceGap in a log without presence updates", after, limit)
	}
	return r
}

// readAll reads every retained update after after, checking the order.
func (in *instance) readAll(after uint64) []*hub.Update {
	in.t.Helper()
	var all []*hub.Update
	for {
		us := in.read(after, 1000)
		if len(us) == 0 {
			return all
		}
		for _, u := range us {
			if u.Seq <= after {
				in.t.Fatalf("Read returned Seq %d after %d", u.Seq, after)
			}
			after = u.Seq
		}
		all = append(all, us...)
	}
}

// eventually polls cond until it returns nil or the suite's timeout ends.
func (in *instance) eventually(what string, cond func() error) {
	in.t.Helper()
	deadline := time.Now().Add(in.s.opts.Timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			in.t.Fatalf("%s: still not true after %v: %v", what, in.s.opts.Timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// retained checks that exactly want is retained: Read from every position
// returns the right suffix, Lookup finds each id, and HistoryLen agrees.
func (in *instance) retained(want []*hub.Update) error {
	ctx := in.t.Context()
	r, err := in.e.Read(ctx, hub.Position{Epoch: in.head.Epoch}, len(want)+10)
	if err != nil {
		return err
	}
	got := r.Updates
	if len(got) != len(want) {
		return fmt.Errorf("Read(0) returned %d updates, want %d", len(got), len(want))
	}
	for i := range want {
		if d := diff(got[i], want[i]); d != "" {
			return fmt.Errorf("Read(0)[%d]: %s", i, d)
		}
	}
	if st, ok := in.e.(hub.Stats); ok {
		if n := st.HistoryLen(); n != len(want) {
			return fmt.Errorf("HistoryLen() = %d, want %d", n, len(want))
		}
	}
	return nil
}

// recorder is a feed that records what it gets and notices overlapping
// calls, disorder, skips, epoch changes, and updates fed before Read and
// Lookup can see them.
type recorder struct {
	e     hub.Engine
	ctx   context.Context // for the reads made from the feed
	busy  atomic.Int32
	mu    sync.Mutex
	epoch uint64 // from Listen, or the last new epoch fed
	last  uint64 // Seq of the last update fed, or the head at Listen
	got   []*hub.Update
	errs  []string
	// newEpochs lets the feed open new epochs (a test that replaces the
	// log); otherwise a new epoch is an error.
	newEpochs bool
}

func (r *recorder) feed(b hub.Batch) {
	if r.busy.Add(1) != 1 {
		r.fail("feed calls overlap")
	}
	defer r.busy.Add(-1)
	// The feed runs only once an update is visible: Read and Lookup find
	// every update of the batch from inside the feed call. Retention may
	// have dropped the oldest of them already, so the check covers what
	// Read still returns and only ids that Read returns.
	if len(b.Updates) > 0 {
		first := b.Updates[0]
		rg, err := r.e.Read(r.ctx, hub.Position{Epoch: b.Epoch, Seq: first.Seq - 1}, len(b.Updates))
		switch {
		case err != nil:
			r.fail(fmt.Sprintf("feed: Read of the batch being fed: %v", err))
		case !rg.Gap && !rg.PresenceGap && len(rg.Updates) != len(b.Updates):
			r.fail(fmt.Sprintf("feed: batch of Seqs %v fed while Read returns %v", seqs(b.Updates), seqs(rg.Updates)))
		case rg.Head < b.Updates[len(b.Updates)-1].Seq:
			r.fail(fmt.Sprintf("feed: Read's Head %d is before the batch fed (last Seq %d)", rg.Head, b.Updates[len(b.Updates)-1].Seq))
		case len(rg.Updates) > 0:
			u := rg.Updates[len(rg.Updates)-1]
			if pos, ok, err := r.e.Lookup(r.ctx, u.ID); err != nil || !ok || pos.Seq > u.Seq {
				r.fail(fmt.Sprintf("feed: Lookup(%q) of an update being fed = %v, %v, %v", u.ID, pos, ok, err))
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if b.Epoch != r.epoch {
		if !r.newEpochs {
			r.errs = append(r.errs, fmt.Sprintf("feed: epoch %d, Listen said %d", b.Epoch, r.epoch))
		}
		// The new log's feed starts where the batch says.
		r.epoch, r.last = b.Epoch, b.After
	}
	if b.After != r.last {
		// One node's engine has no reason to skip.
		r.errs = append(r.errs, fmt.Sprintf("feed: batch after Seq %d, the last fed was %d", b.After, r.last))
	}
	for _, u := range b.Updates {
		if u.Seq != r.last+1 {
			r.errs = append(r.errs, fmt.Sprintf("feed: Seq %d after %d", u.Seq, r.last))
		}
		r.last = u.Seq
		r.got = append(r.got, u)
	}
}

// current returns the epoch the feed is in.
func (r *recorder) current() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch
}

func (r *recorder) fail(msg string) {
	r.mu.Lock()
	r.errs = append(r.errs, msg)
	r.mu.Unlock()
}

func (r *recorder) updates() []*hub.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*hub.Update(nil), r.got...)
}

func (r *recorder) check(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Error(e)
	}
}

// fed waits until the feed has delivered exactly want, in order.
func (in *instance) fed(want []*hub.Update) {
	in.t.Helper()
	in.eventually("feed delivers every update", func() error {
		got := in.feed.updates()
		if len(got) < len(want) {
			return fmt.Errorf("feed delivered %d updates, want %d", len(got), len(want))
		}
		return nil
	})
	got := in.feed.updates()
	if len(got) != len(want) {
		in.t.Fatalf("feed delivered %d updates, want %d", len(got), len(want))
	}
	for i := range want {
		if d := diff(got[i], want[i]); d != "" {
			in.t.Fatalf("feed[%d]: %s", i, d)
		}
	}
}

func (s *suite) testSequence(t *testing.T) {
	in := s.start(t, t.TempDir(), hub.Retention{})
	const n = 200
	var all []*hub.Update
	for i := range n {
		u := NewUpdate(fmt.Sprintf("seq-%d", i))
		if u.Seq != 0 {
			t.Fatal("NewUpdate set Seq")
		}
		in.append(u)
		// Seq starts at 1 and takes every position: hub compares Seqs to
		// detect what retention dropped, so a gap would look like a loss.
		if want := uint64(i + 1); u.Seq != want {
			t.Fatalf("update %d got Seq %d, want %d", i, u.Seq, want)
		}
		all = append(all, u)
	}
	in.fed(all)
	if err := in.retained(all); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testConcurrentAppend(t *testing.T) {
	in := s.start(t, t.TempDir(), hub.Retention{})
	const workers, each = 8, 500
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	perWorker := make([][]*hub.Update, workers)
	for w := range workers {
		wg.Go(func() {
			var last uint64
			for i := range each {
				u := NewUpdate(fmt.Sprintf("w%d-%d", w, i))
				if err := in.e.Append(t.Context(), u); err != nil {
					errs <- fmt.Errorf("worker %d: Append: %w", w, err)
					return
				}
				// A worker's own appends are ordered by their calls.
				if u.Seq <= last {
					errs <- fmt.Errorf("worker %d: Seq %d after %d", w, u.Seq, last)
					return
				}
				last = u.Seq
				perWorker[w] = append(perWorker[w], u)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = workers * each
	bySeq := make([]*hub.Update, total)
	for _, us := range perWorker {
		for _, u := range us {
			if u.Seq < 1 || u.Seq > total {
				t.Fatalf("Seq %d out of 1..%d", u.Seq, total)
			}
			if bySeq[u.Seq-1] != nil {
				t.Fatalf("Seq %d given to %q and %q", u.Seq, bySeq[u.Seq-1].ID, u.ID)
			}
			bySeq[u.Seq-1] = u
		}
	}
	in.fed(bySeq)
	if err := in.retained(bySeq); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testRead(t *testing.T) {
	in := s.start(t, t.TempDir(), hub.Retention{})
	const n = 50
	var all []*hub.Update
	base := time.Now().Add(-time.Minute)
	for i := range n {
		u := NewUpdate(fmt.Sprintf("read-%d", i))
		u.Time = base.Add(time.Duration(i) * time.Millisecond)
		u.Private = i%3 == 0
		all = append(all, in.append(u))
	}
	for after := 0; after <= n+1; after++ {
		for _, limit := range []int{1, 3, n, n + 10} {
			got := in.read(uint64(after), limit)
			want := all[min(after, n):]
			want = want[:min(limit, len(want))]
			if len(got) != len(want) {
				t.Fatalf("Read(%d, %d) returned %d updates, want %d", after, limit, len(got), len(want))
			}
			for i := range want {
				if d := diff(got[i], want[i]); d != "" {
					t.Fatalf("Read(%d, %d)[%d]: %s", after, limit, i, d)
				}
			}
		}
	}
	if got := in.read(1<<63, 10); len(got) != 0 {
		t.Fatalf("Read far past the end returned %d updates", len(got))
	}
}

func (s *suite) testLookup(t *testing.T) {
	in := s.start(t, t.TempDir(), hub.Retention{})
	ids := []string{"a", "ab", "b", "urn:uuid:6f0e3c9a-1b2c-4d5e-8f90-123456789abc", "été ✓", "a/b?c=d#e", "A"}
	us := in.appendIDs(ids...)
	for _, u := range us {
		seq, ok := in.lookup(u.ID)
		if !ok || seq != u.Seq {
			t.Errorf("Lookup(%q) = %d, %v; want %d, true", u.ID, seq, ok, u.Seq)
		}
	}
	// Prefixes, extensions and case variants of stored ids are other ids.
	// Not found, Lookup gives the head.
	head := us[len(us)-1].Seq
	for _, id := range []string{"", "c", "a/", "abc", "été", "a/b?c=d#e ", "urn:uuid:", "\x00"} {
		if seq, ok := in.lookup(id); ok || seq != head {
			t.Errorf("Lookup(%q) = %d, %v; want not found at the head, %d", id, seq, ok, head)
		}
	}
}

func (s *suite) testDuplicateIDs(t *testing.T) {
	in := s.start(t, t.TempDir(), hub.Retention{MaxCount: 3})
	expect := func(step string, want map[string]uint64) {
		t.Helper()
		in.eventually(step, func() error {
			for id, seq := range want {
				pos, ok, err := in.e.Lookup(t.Context(), id)
				if err != nil {
					return err
				}
				got := pos.Seq
				if seq == 0 && ok {
					return fmt.Errorf("Lookup(%q) = %d, want not found", id, got)
				}
				if seq != 0 && (!ok || got != seq) {
					return fmt.Errorf("Lookup(%q) = %d, %v; want %d", id, got, ok, seq)
				}
			}
			return nil
		})
	}
	in.appendIDs("a", "b", "a") // 1 2 3
	expect("earliest occurrence", map[string]uint64{"a": 1, "b": 2})
	in.appendIDs("c") // evicts 1
	expect("after evicting the first a", map[string]uint64{"a": 3, "b": 2, "c": 4})
	in.appendIDs("a") // evicts 2
	expect("after evicting b", map[string]uint64{"a": 3, "b": 0, "c": 4})
	in.appendIDs("d") // evicts 3
	expect("after evicting the second a", map[string]uint64{"a": 5, "c": 4, "d": 6})
	in.appendIDs("e", "f") // evicts 4, 5
	expect("after evicting every a", map[string]uint64{"a": 0, "c": 0, "d": 6, "e": 7, "f": 8})
	in.appendIDs("f", "f", "f") // evicts 6, 7, 8
	expect("a run of one id", map[string]uint64{"d": 0, "e": 0, "f": 9})
}

func (s *suite) testRetentionCount(t *testing.T) {
	const max, n = 10, 25
	in := s.start(t, t.TempDir(), hub.Retention{MaxCount: max})
	var all []*hub.Update
	for i := range n {
		all = append(all, in.append(NewUpdate(fmt.Sprintf("count-%d", i))))
	}
	kept := all[n-max:]
	in.eventually("exactly MaxCount retained", func() error { return in.retained(kept) })
	for _, u := range all[:n-max] {
		if seq, ok := in.lookup(u.ID); ok {
			t.Errorf("Lookup(%q) of a dropped update = %d, true", u.ID, seq)
		}
	}
	for _, u := range kept {
		if seq, ok := in.lookup(u.ID); !ok || seq != u.Seq {
			t.Errorf("Lookup(%q) = %d, %v; want %d", u.ID, seq, ok, u.Seq)
		}
	}
	// Reading after a dropped position skips to the oldest retained and
	// says so (readRange checks Gap against the Seqs).
	for after := uint64(0); after < kept[0].Seq; after++ {
		r := in.readRange(after, 3)
		if wantGap := after+1 < kept[0].Seq; r.Gap != wantGap {
			t.Fatalf("Read(%d, 3): Gap %v, want %v", after, r.Gap, wantGap)
		}
		got := r.Updates
		if len(got) != 3 || got[0].Seq != kept[0].Seq {
			t.Fatalf("Read(%d, 3) = %d updates from Seq %v, want 3 from %d", after, len(got), seqs(got), kept[0].Seq)
		}
	}
	in.fed(all)
}

func (s *suite) testRetentionAge(t *testing.T) {
	const maxAge = 50 * time.Millisecond
	in := s.start(t, t.TempDir(), hub.Retention{MaxAge: maxAge})
	var old, fresh []*hub.Update
	for i := range 5 {
		u := NewUpdate(fmt.Sprintf("old-%d", i))
		u.Time = time.Now().Add(-time.Hour)
		old = append(old, in.append(u))
	}
	// Updates from the future stay however slow the test machine is.
	for i := range 5 {
		u := NewUpdate(fmt.Sprintf("fresh-%d", i))
		u.Time = time.Now().Add(time.Hour)
		fresh = append(fresh, in.append(u))
	}
	in.eventually("old updates dropped", func() error { return in.retained(fresh) })
	for _, u := range old {
		if seq, ok := in.lookup(u.ID); ok {
			t.Errorf("Lookup(%q) of an expired update = %d, true", u.ID, seq)
		}
	}
	if got := in.read(1, 10); len(got) == 0 || got[0].Seq != fresh[0].Seq {
		t.Errorf("Read(1) starts at Seq %v, want %d", seqs(got), fresh[0].Seq)
	}

	// Without any append, recent updates expire in their own time.
	in2 := s.start(t, t.TempDir(), hub.Retention{MaxAge: maxAge})
	us := in2.appendIDs("soon-1", "soon-2", "soon-3")
	in2.eventually("idle history expires", func() error { return in2.retained(nil) })
	for _, u := range us {
		if seq, ok := in2.lookup(u.ID); ok {
			t.Errorf("Lookup(%q) of an expired update = %d, true", u.ID, seq)
		}
	}
	if u := in2.append(NewUpdate("after")); u.Seq != 4 {
		t.Errorf("Append after expiry got Seq %d, want 4: positions are never reused", u.Seq)
	}
	in.fed(append(old, fresh...))
}

func (s *suite) testContextDone(t *testing.T) {
	dir := t.TempDir()
	in := s.start(t, dir, hub.Retention{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	u := NewUpdate("canceled")
	var want []*hub.Update
	if err := in.e.Append(ctx, u); err != nil {
		// On error nothing is stored and no position is taken.
		if u.Seq != 0 {
			t.Errorf("failed Append set Seq %d", u.Seq)
		}
		if _, ok := in.lookup(u.ID); ok {
			t.Error("failed Append is found by Lookup")
		}
	} else {
		want = append(want, u)
	}
	next := in.append(NewUpdate("next"))
	want = append(want, next)
	if next.Seq != uint64(len(want)) {
		t.Errorf("Append after a failed one got Seq %d, want %d", next.Seq, len(want))
	}
	if err := in.retained(want); err != nil {
		t.Error(err)
	}
	in.fed(want)
	if s.opts.Durable {
		// A failed Append leaves nothing across a reopen either.
		refused := u.ID
		if u.Seq != 0 {
			refused = "" // it succeeded after all; never an id
		}
		s.reopenWithout(t, in, dir, want, refused)
	}
}

// reopenWithout closes in, opens its dir again and checks that exactly
// want is retained and that the refused id is nowhere. It returns the
// reopened instance.
func (s *suite) reopenWithout(t *testing.T, in *instance, dir string, want []*hub.Update, refused string) *instance {
	t.Helper()
	in.close()
	in = s.start(t, dir, hub.Retention{})
	if err := in.retained(want); err != nil {
		t.Errorf("after reopen: %v", err)
	}
	if _, ok := in.lookup(refused); ok {
		t.Errorf("after reopen, the failed Append of %q is found by Lookup", refused)
	}
	return in
}

// testEpoch: positions carry the epoch of their log. A reopened durable
// engine continues its log (same epoch, same head); another log, even an
// empty one, has another epoch; Read refuses a position of another epoch
// rather than read it as one of its own.
func (s *suite) testEpoch(t *testing.T) {
	dir := t.TempDir()
	in := s.start(t, dir, hub.Retention{})
	if in.head.Seq != 0 {
		t.Fatalf("Listen on a new log returned head %d, want 0", in.head.Seq)
	}
	us := in.appendIDs("e1", "e2", "e3")
	pos, ok, err := in.e.Lookup(t.Context(), "e2")
	if err != nil || !ok || pos != (hub.Position{Epoch: in.head.Epoch, Seq: us[1].Seq}) {
		t.Fatalf("Lookup(e2) = %+v, %v, %v; want Seq %d in epoch %d", pos, ok, err, us[1].Seq, in.head.Epoch)
	}
	other := s.start(t, t.TempDir(), hub.Retention{})
	if other.head.Epoch == in.head.Epoch {
		t.Fatalf("two logs share epoch %d", in.head.Epoch)
	}
	for _, bad := range []uint64{other.head.Epoch, in.head.Epoch + 1} {
		if r, err := in.e.Read(t.Context(), hub.Position{Epoch: bad}, 10); !errors.Is(err, hub.ErrEpoch) {
			t.Errorf("Read in epoch %d of a log of epoch %d = %d updates, %v; want hub.ErrEpoch", bad, in.head.Epoch, len(r.Updates), err)
		}
	}
	if !s.opts.Durable {
		return
	}
	epoch := in.head.Epoch
	in.close()
	in = s.start(t, dir, hub.Retention{})
	if in.head != (hub.Position{Epoch: epoch, Seq: us[2].Seq}) {
		t.Fatalf("after reopen, Listen = %+v; want the same log, epoch %d at Seq %d", in.head, epoch, us[2].Seq)
	}
	if got := in.read(0, 10); len(got) != 3 {
		t.Fatalf("after reopen, Read in the old epoch returned %d updates, want 3", len(got))
	}
}

func (s *suite) testClosed(t *testing.T) {
	in := s.start(t, t.TempDir(), hub.Retention{})
	c, ok := in.e.(hub.Closer)
	if !ok {
		t.Skip("engine does not implement hub.Closer")
	}
	in.appendIDs("before")
	for range 2 {
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	u := NewUpdate("after")
	if err := in.e.Append(t.Context(), u); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Append after Close = %v, want hub.ErrClosed", err)
	}
	if u.Seq != 0 {
		t.Errorf("Append after Close set Seq %d", u.Seq)
	}
	// Reading a closed engine may work or fail with ErrClosed, never panic.
	if _, err := in.e.Read(t.Context(), hub.Position{Epoch: in.head.Epoch}, 10); err != nil && !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Read after Close = %v, want nil or hub.ErrClosed", err)
	}
	if _, _, err := in.e.Lookup(t.Context(), "before"); err != nil && !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Lookup after Close = %v, want nil or hub.ErrClosed", err)
	}
	if st, ok := in.e.(hub.Stats); ok {
		_ = st.HistoryLen()
	}
}

func (s *suite) testCloseWhileBusy(t *testing.T) {
	in := s.start(t, t.TempDir(), hub.Retention{MaxCount: 100})
	c, ok := in.e.(hub.Closer)
	if !ok {
		t.Skip("engine does not implement hub.Closer")
	}
	ctx := t.Context()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		acked atomic.Int64
		// closeDone tells readers that Close has returned: reading a
		// closed engine may go on working, so they stop on it.
		closeDone atomic.Bool
	)
	report := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := in.e.Append(ctx, NewUpdate(fmt.Sprintf("busy-%d-%d", w, i)))
				if errors.Is(err, hub.ErrClosed) {
					return
				}
				if err != nil {
					report(fmt.Errorf("append: %w", err))
					return
				}
				acked.Add(1)
			}
		})
	}
	for r := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := in.e.Read(ctx, hub.Position{Epoch: in.head.Epoch, Seq: uint64(i % 50)}, 10)
				if err == nil {
					_, _, err = in.e.Lookup(ctx, fmt.Sprintf("busy-%d-%d", r, i%50))
				}
				if errors.Is(err, hub.ErrClosed) {
					return
				}
				if err != nil {
					report(fmt.Errorf("read or lookup: %w", err))
					return
				}
				if closeDone.Load() {
					return
				}
				// Spinning readers would keep woken appenders off the
				// CPUs until preemption.
				runtime.Gosched()
			}
		})
	}
	in.eventually("appends under way", func() error {
		if n := acked.Load(); n < 200 {
			return fmt.Errorf("%d appends acknowledged", n)
		}
		return nil
	})
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(s.opts.Timeout):
		t.Fatal("Close did not return while appends and reads were live")
	}
	closeDone.Store(true)
	ended := make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(s.opts.Timeout):
		t.Fatal("appenders or readers still running after Close")
	}
	for _, err := range errs {
		t.Error(err)
	}
}

func (s *suite) testReopen(t *testing.T) {
	if !s.opts.Durable {
		t.Skip("engine is not durable")
	}
	dir := t.TempDir()
	in := s.start(t, dir, hub.Retention{})
	if _, ok := in.e.(hub.Closer); !ok {
		t.Fatal("a durable engine must implement hub.Closer")
	}
	var all []*hub.Update
	for i := range 30 {
		u := NewUpdate(fmt.Sprintf("reopen-%d", i))
		u.Time = time.Now().Add(time.Duration(i) * time.Second)
		u.Private = i%4 == 0
		all = append(all, in.append(u))
	}
	all = append(all, in.appendIDs("reopen-0")...) // a duplicate id survives too
	in.close()

	in = s.start(t, dir, hub.Retention{})
	if err := in.retained(all); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	for _, u := range all[:30] {
		if seq, ok := in.lookup(u.ID); !ok || seq != u.Seq {
			t.Errorf("after reopen, Lookup(%q) = %d, %v; want %d", u.ID, seq, ok, u.Seq)
		}
	}
	next := in.append(NewUpdate("reopen-next"))
	if want := uint64(len(all) + 1); next.Seq != want {
		t.Errorf("after reopen, Append got Seq %d, want %d", next.Seq, want)
	}
	// The feed of a reopened engine carries only what is appended to it.
	in.fed([]*hub.Update{next})
	all = append(all, next)
	in.close()

	// Reopening with a tighter retention applies it without an append.
	const max = 10
	in = s.start(t, dir, hub.Retention{MaxCount: max})
	in.eventually("tighter retention applied on reopen", func() error {
		return in.retained(all[len(all)-max:])
	})
	if next := in.append(NewUpdate("reopen-last")); next.Seq != all[len(all)-1].Seq+1 {
		t.Errorf("after reopen, Append got Seq %d, want %d", next.Seq, all[len(all)-1].Seq+1)
	}
}

func (s *suite) testReopenAfterEviction(t *testing.T) {
	if !s.opts.Durable {
		t.Skip("engine is not durable")
	}
	dir := t.TempDir()
	r := hub.Retention{MaxAge: 50 * time.Millisecond}
	in := s.start(t, dir, r)
	for i := range 3 {
		u := NewUpdate(fmt.Sprintf("gone-%d", i))
		u.Time = time.Now().Add(-time.Hour)
		in.append(u)
	}
	in.eventually("history expired", func() error { return in.retained(nil) })
	in.close()

	// Positions are never reused, even when nothing is left to show the
	// last one.
	in = s.start(t, dir, r)
	if u := in.append(NewUpdate("back")); u.Seq != 4 {
		t.Errorf("after reopening an empty history, Append got Seq %d, want 4", u.Seq)
	}
}

func seqs(us []*hub.Update) []uint64 {
	out := make([]uint64, len(us))
	for i, u := range us {
		out[i] = u.Seq
	}
	return out
}

// testFailedAppend: an append the storage refuses fails, takes no Seq,
// and is absent from Read, Lookup and the feed, and, for a durable engine,
// after a reopen too, whether or not a later append succeeded before it.
func (s *suite) testFailedAppend(t *testing.T) {
	for _, later := range []bool{true, false} {
		t.Run(fmt.Sprintf("later=%v", later), func(t *testing.T) {
			dir := t.TempDir()
			e, fail := s.opts.Faulty(t, dir, hub.Retention{})
			in := s.listen(t, e)
			want := in.appendIDs("ok-1", "ok-2")
			fail(true)
			refused := NewUpdate("refused")
			if err := e.Append(t.Context(), refused); err == nil {
				t.Fatal("Append succeeded while the storage fails")
			}
			if refused.Seq != 0 {
				t.Errorf("failed Append set Seq %d", refused.Seq)
			}
			fail(false)
			if later {
				u := NewUpdate("ok-3")
				if err := e.Append(t.Context(), u); err != nil {
					// A durable engine may stop after a write failure
					// rather than risk what it cannot check.
					t.Logf("Append after the storage healed: %v", err)
				} else {
					want = append(want, u)
					if u.Seq != 3 {
						t.Errorf("Append after a failed one got Seq %d, want 3", u.Seq)
					}
				}
			}
			if _, ok := in.lookup("refused"); ok {
				t.Error("a failed Append is found by Lookup")
			}
			if err := in.retained(want); err != nil {
				t.Error(err)
			}
			in.fed(want)
			if !s.opts.Durable {
				return
			}
			in = s.reopenWithout(t, in, dir, want, "refused")
			next := in.append(NewUpdate("after-reopen"))
			if next.Seq != uint64(len(want)+1) {
				t.Errorf("after reopen, Append got Seq %d, want %d", next.Seq, len(want)+1)
			}
		})
	}
}

// testLostLog: a log replaced under a running engine (a shared store
// restarted without its data, or flushed) is a new epoch. The feed says so
// before it feeds any update of the new log; positions of the old log are
// refused, its ids are unknown, and appends go on in the new log, whose
// Seqs start again.
func (s *suite) testLostLog(t *testing.T) {
	in := s.start(t, t.TempDir(), hub.Retention{})
	in.feed.mu.Lock()
	in.feed.newEpochs = true
	in.feed.mu.Unlock()
	old := in.appendIDs("lost-1", "lost-2", "lost-3")
	in.fed(old)
	s.opts.Replace(t, in.e)
	in.eventually("the feed opens a new epoch", func() error {
		if in.feed.current() == in.head.Epoch {
			return errors.New("still in the old epoch")
		}
		return nil
	})
	epoch := in.feed.current()
	fresh := in.appendIDs("new-1", "new-2")
	in.fed(append(old, fresh...))
	if fresh[0].Seq != 1 || fresh[1].Seq != 2 {
		t.Errorf("the new log's first Seqs are %d, %d; want 1, 2", fresh[0].Seq, fresh[1].Seq)
	}
	if r, err := in.e.Read(t.Context(), hub.Position{Epoch: in.head.Epoch}, 10); !errors.Is(err, hub.ErrEpoch) {
		t.Errorf("Read in the lost epoch = %d updates, %v; want hub.ErrEpoch", len(r.Updates), err)
	}
	r, err := in.e.Read(t.Context(), hub.Position{Epoch: epoch}, 10)
	if err != nil {
		t.Fatalf("Read in the new epoch: %v", err)
	}
	if len(r.Updates) != len(fresh) || r.Gap || r.Head != fresh[1].Seq {
		t.Fatalf("Read in the new epoch = Seqs %v, Gap %v, Head %d; want the 2 new updates", seqs(r.Updates), r.Gap, r.Head)
	}
	for i := range fresh {
		if d := diff(r.Updates[i], fresh[i]); d != "" {
			t.Errorf("Read in the new epoch [%d]: %s", i, d)
		}
	}
	for _, u := range old {
		pos, ok, err := in.e.Lookup(t.Context(), u.ID)
		if err != nil || ok || pos.Epoch != epoch {
			t.Errorf("Lookup(%q) of a lost update = %+v, %v, %v; want not found in epoch %d", u.ID, pos, ok, err, epoch)
		}
	}
	pos, ok, err := in.e.Lookup(t.Context(), "new-2")
	if err != nil || !ok || pos != (hub.Position{Epoch: epoch, Seq: fresh[1].Seq}) {
		t.Errorf("Lookup(new-2) = %+v, %v, %v; want Seq %d in epoch %d", pos, ok, err, fresh[1].Seq, epoch)
	}
}
