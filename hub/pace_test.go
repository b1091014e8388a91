package hub

import (
	"math"
	"runtime"
	"testing"
	"time"
)

func TestPaceDelay(t *testing.T) {
	const top = 50 * time.Millisecond
	for _, c := range []struct {
		rate float64
		want time.Duration
	}{
		{0, 0},
		{1000, 0},
		{1500, 25 * time.Millisecond},
		{1750, 37500 * time.Microsecond},
		{2000, top},
		{1e9, top},
	} {
		if got := paceDelay(c.rate, 1000, 2000, top); got != c.want {
			t.Errorf("paceDelay(%v) = %v, want %v", c.rate, got, c.want)
		}
	}
}

// TestPacerObserve: the delay follows the offered rate window by window,
// quiet spells included, and a fixed or disabled delay ignores the load.
func TestPacerObserve(t *testing.T) {
	var p pacer
	p.init(0)
	cores := float64(runtime.GOMAXPROCS(0)) // the thresholds are per core
	p.low, p.high, p.top = 1000/cores, 2000/cores, 40*time.Millisecond
	p.wait = func() waits { return waits{} } // a machine with cores to spare
	ms := int64(time.Millisecond)
	t0 := int64(1_000_000) * ms

	p.observe(100, t0)
	if d := p.delay(); d != 0 {
		t.Fatalf("delay %v before a window has passed", d)
	}
	p.observe(100, t0+50*ms) // 200 in 50ms: not a window yet
	if d := p.delay(); d != 0 {
		t.Fatalf("delay %v before a window has passed", d)
	}
	p.observe(100, t0+100*ms) // 300 in 100ms: 3,000/s
	if d := p.delay(); d != 40*time.Millisecond {
		t.Fatalf("delay %v at 3,000/s, want the top", d)
	}
	if d := p.current(t0 + 100*ms); d != 40*time.Millisecond {
		t.Fatalf("current %v right after the window, want the top", d)
	}
	if d := p.current(t0 + 100*ms + int64(paceStale) + ms); d != 0 {
		t.Fatalf("current %v after a quiet spell, want 0", d)
	}
	p.observe(150, t0+200*ms) // 150 in 100ms: 1,500/s, halfway
	if d := p.delay(); d != 20*time.Millisecond {
		t.Fatalf("delay %v at 1,500/s, want 20ms", d)
	}
	p.observe(500, t0+1200*ms) // 500 in a second: below low
	if d := p.delay(); d != 0 {
		t.Fatalf("delay %v at 500/s, want 0", d)
	}

	// The clock steps back an hour: a new window starts there, and the
	// rate is not computed from a negative time.
	back := t0 - int64(time.Hour)
	p.observe(1000, back)
	if d := p.delay(); d != 0 {
		t.Fatalf("delay %v right after the clock went back", d)
	}
	p.d.Store(int64(time.Millisecond)) // as if the last window had paced
	if d := p.current(back); d != 0 {
		t.Fatalf("current %v with the last window in the future, want 0", d)
	}
	p.observe(1000, back+100*ms) // 2,000 in 100ms since the step
	if d := p.delay(); d != 40*time.Millisecond {
		t.Fatalf("delay %v at 20,000/s after the step, want the top", d)
	}

	var fixed pacer
	fixed.init(7 * time.Millisecond)
	fixed.observe(1_000_000, t0)
	fixed.observe(1_000_000, t0+200*ms)
	if d := fixed.delay(); d != 7*time.Millisecond {
		t.Errorf("fixed delay moved to %v", d)
	}
	if d := fixed.current(t0 + 100*int64(time.Second)); d != 7*time.Millisecond {
		t.Errorf("fixed delay reported as %v", d)
	}
	var off pacer
	off.init(-1)
	off.observe(1_000_000, t0)
	off.observe(1_000_000_000, t0+200*ms)
	if d, c := off.delay(), off.current(t0+200*ms); d != 0 || c != 0 {
		t.Errorf("disabled delay is %v (reported %v)", d, c)
	}
}

// TestPacerSchedulingWaits: goroutines waiting for a CPU raise the delay
// beyond what the rate alone asks for, once the window has enough waits and
// the hub writes enough for pacing to save anything; when the waits end the
// delay they asked for falls a step per window, and the delay in force is
// never below what the rate asks for.
func TestPacerSchedulingWaits(t *testing.T) {
	var p pacer
	p.init(0)
	cores := float64(runtime.GOMAXPROCS(0))
	p.low, p.high, p.top = 1000/cores, 2000/cores, 40*time.Millisecond
	var wait float64  // the median the runtime reports, in seconds
	var nWaits uint64 // how many waits it sampled
	p.wait = func() waits { return waits{median: wait, n: nWaits} }
	ms := int64(time.Millisecond)
	now := int64(1_000_000) * ms
	window := func(offered int) time.Duration { // one window at offered per 100ms
		t.Helper()
		p.observe(offered, now)
		now += 100 * ms
		p.observe(0, now)
		return p.delay()
	}
	p.observe(0, now)

	// 300/s: past a quarter of the low rate, where waits start to count.
	nWaits = 1000
	wait = (paceWaitLow + paceWaitHigh).Seconds() / 2
	if d := window(30); d != 20*time.Millisecond {
		t.Fatalf("delay %v with median wait halfway between low and high, want half the top", d)
	}
	wait = 10 * paceWaitHigh.Seconds()
	if d := window(30); d != 40*time.Millisecond {
		t.Fatalf("delay %v with median wait past high, want the top", d)
	}
	// The waits end: the delay decays a step a window.
	wait = 0
	step := p.top / paceDecayWindows
	for i := range 3 {
		if d, want := window(30), p.top-time.Duration(i+1)*step; d != want {
			t.Fatalf("window %d after the waits ended: delay %v, want %v", i+1, d, want)
		}
	}
	// The rate asks for more than the decayed wait (1,500/s, halfway:
	// 20ms): the rate wins once the decay has passed below it.
	for p.byCPU > 20*time.Millisecond {
		window(150)
	}
	if d := window(150); d != 20*time.Millisecond {
		t.Fatalf("delay %v at 1,500/s with the waits' delay (%v) decayed below it, want 20ms", d, p.byCPU)
	}
	for range paceDecayWindows {
		window(0)
	}
	if p.byCPU != 0 {
		t.Fatalf("waits' delay %v after %d windows without waits", p.byCPU, paceDecayWindows)
	}

	// Long waits count only with enough of them, and only on a hub that
	// writes enough for pacing to save anything.
	wait = 10 * paceWaitHigh.Seconds()
	nWaits = paceWaitMin - 1
	if d := window(30); d != 0 {
		t.Fatalf("delay %v from %d waits, want none", d, nWaits)
	}
	nWaits = 1000
	if d := window(20); d != 0 {
		t.Fatalf("delay %v below a quarter of the low rate, want none", d)
	}
	if d := window(30); d != 40*time.Millisecond {
		t.Fatalf("delay %v with long waits past a quarter of the low rate, want the top", d)
	}
}

// TestSchedWait reads the runtime's histogram: the first read is a
// baseline, and goroutines made runnable after it are counted by the next.
func TestSchedWait(t *testing.T) {
	var w schedWait
	if got := w.read(); got.n != 0 {
		t.Fatalf("first read counted %d waits; it is the baseline", got.n)
	}
	for range 2000 { // the runtime samples a fraction of scheduling events
		done := make(chan struct{})
		go func() { close(done) }()
		<-done
	}
	got := w.read()
	if got.n == 0 {
		t.Fatal("2,000 goroutines scheduled, no wait counted")
	}
	for _, sec := range []float64{got.median, got.p90} {
		if sec < 0 || math.IsInf(sec, 0) || math.IsNaN(sec) {
			t.Fatalf("wait %v s", sec)
		}
	}
	if got.p90 < got.median {
		t.Fatalf("90th percentile %v below the median %v", got.p90, got.median)
	}
}

// TestInboxOldest: the dispatch lag is measured from the oldest batch the
// dispatcher has not finished: one it took and is still offering, then
// the next one waiting, then none.
func TestInboxOldest(t *testing.T) {
	var in inbox
	in.init(1 << 20)
	sameEpoch := func(uint64) bool { return false }
	batch := func(seq uint64) Batch {
		return Batch{Epoch: 1, After: seq - 1, Updates: []*Update{{Seq: seq, Frame: []byte("data: x\n\n")}}}
	}
	in.put(batch(1), 100, sameEpoch)
	in.put(batch(2), 200, sameEpoch)
	if got := in.oldest.Load(); got != 100 {
		t.Fatalf("oldest %d, want the first put's 100", got)
	}
	in.take(nil)
	in.put(batch(3), 300, sameEpoch)
	if got := in.oldest.Load(); got != 100 {
		t.Fatalf("oldest %d while the dispatcher offers what it took, want 100", got)
	}
	in.dispatched()
	if got := in.oldest.Load(); got != 300 {
		t.Fatalf("oldest %d once the taken batches are offered, want the waiting one's 300", got)
	}
	in.take(nil)
	in.dispatched()
	if got := in.oldest.Load(); got != 0 {
		t.Fatalf("oldest %d with nothing left, want 0", got)
	}

	// A dropped batch: the catch-up still owes it, so the lag runs on.
	in.init(1)
	in.put(batch(4), 400, sameEpoch)
	in.put(batch(5), 500, sameEpoch) // over the limit: dropped
	in.take(nil)
	in.put(batch(6), 600, sameEpoch) // dropped too: the inbox owes a catch-up
	in.dispatched()
	if got := in.oldest.Load(); got != 400 {
		t.Fatalf("oldest %d with a catch-up owed, want 400", got)
	}
}
