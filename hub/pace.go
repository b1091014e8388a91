package hub

import (
	"runtime"
	"sync/atomic"
	"time"
)

// Write pacing. Every write to a subscriber is one system call, and on a
// large, fast fan-out those calls are most of the hub's CPU (BENCHMARKS.md).
// Holding a busy stream's frames for a few milliseconds and sending them in
// one write saves most of it, at that cost in latency. The pacer decides
// how long, the way a network card moderates its interrupts: by load. It
// counts the frames the dispatcher offers to subscribers, hub-wide, and
// sets the delay from that rate per core: none below paceLow, rising
// linearly to paceMax at paceHigh. A stream that gets fewer updates than
// one per delay never waits, whatever the load, so only streams that are
// both busy and on a busy hub are paced.
//
// The rate per core assumes the process has its cores to itself. When it
// does not (several nodes on one machine, a noisy neighbour, a batch job),
// the same rate costs cores it cannot get, and writes queue behind each
// other for seconds. So the pacer also reads how long the process's
// runnable goroutines wait for a CPU (the runtime's scheduling latency):
// a median wait of paceWaitLow or less adds nothing, paceWaitHigh or more
// asks for paceMax, and the delay in force is the larger of the two. The
// wait falls as soon as pacing frees the CPU, so the delay it asked for
// decays over seconds (paceDecayWindows) instead of dropping at once, which
// keeps it from swinging between two states.
const (
	// paceWindow is how long the dispatcher counts offers before it
	// recomputes the delay.
	paceWindow = 100 * time.Millisecond
	// paceStale is how old the last count may be before the delay is
	// taken to be zero (nothing has been dispatched for a while).
	paceStale = time.Second
	// paceLow and paceHigh are offered frames per second per core. At
	// about 5 µs of CPU per write (most of it the kernel's), paceLow
	// spends a tenth of a core in writes and paceHigh two fifths.
	paceLow  = 20_000
	paceHigh = 80_000
	// paceMax is the delay at paceHigh and above.
	paceMax = 50 * time.Millisecond
	// paceWaitLow and paceWaitHigh are median scheduling waits. A process
	// with a core to spare schedules a runnable goroutine within tens of
	// microseconds; a lone node fanning out 200,000 frames/s on two cores
	// beside its load generator saw 0.2-0.5ms, and each of three nodes
	// sharing those cores 1-7ms.
	paceWaitLow  = 500 * time.Microsecond
	paceWaitHigh = 2 * time.Millisecond
	// paceWaitMin is how many scheduling waits a window needs for its
	// median to count. The waits count only from a quarter of the low
	// rate up: a hub that writes little saves nothing by pacing, whatever
	// else keeps the machine busy.
	paceWaitMin = 50
	// paceDecayWindows is how many windows the delay the waits asked for
	// takes to decay from the top to none once they are gone: five
	// seconds.
	paceDecayWindows = 50
)

// paceDelay is the automatic delay for rate offered frames per second:
// zero up to low, rising linearly to top at high, top from there.
func paceDelay(rate, low, high float64, top time.Duration) time.Duration {
	switch {
	case rate <= low:
		return 0
	case rate >= high:
		return top
	}
	return time.Duration(float64(top) * (rate - low) / (high - low))
}

// pacer holds the current write delay. observe is called by the dispatcher
// only; delay and current by any goroutine.
type pacer struct {
	fixed     time.Duration // Config.WriteDelay: > 0 fixed, < 0 never, 0 automatic
	low, high float64       // offered frames per second per core
	top       time.Duration // the delay at high and above
	// wait returns the scheduling waits since its last call
	// (schedWait.read; tests set their own).
	wait func() waits

	d        atomic.Int64 // the delay in force, in nanoseconds
	last     atomic.Int64 // unix nanos of the last recomputation
	lastWait atomic.Int64 // the median scheduling wait of the last window, in nanoseconds
	lastTail atomic.Int64 // and its 90th percentile

	// Owned by the dispatcher.
	count int64         // frames offered since start
	start int64         // unix nanos the current window began
	byCPU time.Duration // the delay the scheduling waits ask for, decaying
	sw    schedWait
}

func (p *pacer) init(fixed time.Duration) {
	p.fixed, p.low, p.high, p.top = fixed, paceLow, paceHigh, paceMax
	p.wait = p.sw.read
	if fixed > 0 {
		p.d.Store(int64(fixed))
	}
}

// observe counts n frames offered at now (unix nanos) and recomputes the
// delay once a window has passed. The rate is taken over the whole time
// since the window began, quiet spells included.
func (p *pacer) observe(n int, now int64) {
	if p.start == 0 || now < p.start { // first call, or the clock went back
		p.start, p.count = now, 0
	}
	p.count += int64(n)
	elapsed := now - p.start
	if elapsed < int64(paceWindow) {
		return
	}
	// The scheduling wait is read whatever sets the delay: the hub's
	// overload check uses it too.
	w := p.wait()
	if w.n < paceWaitMin {
		w = waits{}
	}
	wait := w.median
	p.lastWait.Store(int64(wait * float64(time.Second)))
	p.lastTail.Store(int64(w.p90 * float64(time.Second)))
	if p.fixed == 0 {
		// Per core, read each window: GOMAXPROCS follows a container's
		// CPU limit as it changes.
		rate := float64(p.count) * float64(time.Second) / float64(elapsed) / float64(runtime.GOMAXPROCS(0))
		p.byCPU = max(p.byCPU-p.top/paceDecayWindows, 0)
		if rate >= p.low/4 {
			p.byCPU = max(p.byCPU, paceDelay(wait, paceWaitLow.Seconds(), paceWaitHigh.Seconds(), p.top))
		}
		p.d.Store(int64(max(paceDelay(rate, p.low, p.high, p.top), p.byCPU)))
	}
	p.last.Store(now)
	p.count, p.start = 0, now
}

// delay is the least time between two writes to one stream, as the writers
// apply it. It may be stale after a quiet spell, which is harmless: a
// stream that has been quiet for longer than the delay does not wait.
func (p *pacer) delay() time.Duration { return time.Duration(p.d.Load()) }

// schedWait is the median and the 90th percentile of the time the
// process's goroutines waited for a CPU in the last window, or zero when
// that window ended over paceStale ago (nothing was dispatched since: the
// figure says nothing of now).
func (p *pacer) schedWait(now int64) (median, p90 time.Duration) {
	if age := now - p.last.Load(); age < 0 || age > int64(paceStale) {
		return 0, 0
	}
	return time.Duration(p.lastWait.Load()), time.Duration(p.lastTail.Load())
}

// current is the delay in force at now, for reporting: zero once nothing
// has been dispatched for paceStale.
func (p *pacer) current(now int64) time.Duration {
	if p.fixed != 0 {
		return max(p.fixed, 0)
	}
	if age := now - p.last.Load(); age < 0 || age > int64(paceStale) { // stale, or the clock went back
		return 0
	}
	return p.delay()
}
