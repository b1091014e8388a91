package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// heapFloor is the least heap size at which the hub starts a garbage
// collection. With GOGC's default of 100 the runtime collects whenever the
// heap grows by what was live (plus goroutine stacks and globals), and
// never later than at 4 MB: a hub publishing durably keeps only 2–4 MB live
// but allocates about 6 KB per publish (most of it net/http's), so at
// 30,000 publishes/s it collected 70 times a second. Letting the heap reach
// 32 MB first cuts that tenfold, for at most 32 MB of memory. A hub whose
// live heap and stacks are larger collects exactly as GOGC says.
const heapFloor = 32 << 20

var floor struct {
	mu    sync.Mutex
	users int
	stop  func()
}

// gcFloor raises GOGC after each collection so that the next one comes no
// sooner than when the heap reaches floorBytes, and never lowers it below
// the GOGC the process started with. A GOGC set in the environment leaves
// the collector alone: whoever sets it has chosen. GOMEMLIMIT still bounds
// the heap. Calls nest (serve may run twice in one process); the last stop
// restores the starting GOGC.
func gcFloor(floorBytes uint64) (stop func()) {
	if os.Getenv("GOGC") != "" { // empty means the default to the runtime too
		return func() {}
	}
	floor.mu.Lock()
	defer floor.mu.Unlock()
	if floor.users == 0 {
		floor.stop = startGCTuner(floorBytes)
	}
	floor.users++
	var once sync.Once
	return func() {
		once.Do(func() {
			floor.mu.Lock()
			defer floor.mu.Unlock()
			if floor.users--; floor.users == 0 {
				floor.stop()
			}
		})
	}
}

func startGCTuner(floorBytes uint64) (stop func()) {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		return func() {}
	}
	t := &gcTuner{floor: floorBytes, base: base, set: base}
	t.sample = []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}
	t.arm()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.stopped.Swap(true) {
			debug.SetGCPercent(t.base)
		}
	}
}

type gcTuner struct {
	floor   uint64
	base    int
	stopped atomic.Bool

	mu     sync.Mutex // tune against stop
	set    int        // the GOGC last set
	sample []metrics.Sample
}

// arm asks for tune to run after the next collection: the runtime runs a
// cleanup once the object it is attached to has been collected.
func (t *gcTuner) arm() {
	runtime.AddCleanup(new(gcSentinel), func(t *gcTuner) {
		if !t.stopped.Load() {
			t.tune()
			t.arm()
		}
	}, t)
}

// gcSentinel is big enough not to share a tiny allocation block, whose
// objects are freed together and late.
type gcSentinel [32]byte

// tune sets GOGC from what the last collection left.
func (t *gcTuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		return
	}
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return
		}
		v[i] = s.Value.Uint64()
	}
	pct := gcPercentFor(v[0], v[1]+v[2], t.floor, t.base)
	// Leave small moves alone: each call takes the heap lock.
	if pct == t.set || (pct > t.set*9/10 && pct < t.set*11/10) {
		return
	}
	t.set = pct
	debug.SetGCPercent(pct)
}

// gcPercentFor is the GOGC that puts the next collection at floor bytes of
// heap, or base if that comes later already. The runtime's heap goal is
// live + (live + roots)·GOGC/100, roots being goroutine stacks and
// globals, and never under 4 MB·GOGC/100: GOGC stays at or under
// floor/4 MB·100, where the minimum alone puts the goal at the floor.
func gcPercentFor(live, roots, floor uint64, base int) int {
	const runtimeMin = 4 << 20
	if live+roots == 0 || live >= floor {
		return base
	}
	pct := int((floor - live) * 100 / (live + roots))
	top := int(floor * 100 / runtimeMin)
	return max(min(pct, top), base)
}
