package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// heapFloor is the least heap size at which the hub starts a garbage
// collection. With GOGC's default of 100 the runtime collects whenever the
// heap doubles, and never later than at 4 MB: a hub publishing durably
// keeps only 2–4 MB live but allocates about 6 KB per publish (most of it
// net/http's), so at 30,000 publishes/s it collected 70 times a second.
// Letting the heap reach 32 MB first cuts that tenfold, for at most 32 MB
// of memory; a hub whose live heap is over 16 MB (some 5,000 connections)
// collects exactly as GOGC says.
const heapFloor = 32 << 20

// gcFloor raises GOGC after each collection so that the next one comes no
// sooner than when the heap reaches floor, and never lowers it below the
// GOGC the process started with. GOGC=off turns it off; GOMEMLIMIT still
// bounds the heap. stop restores the starting GOGC and stops adjusting.
func gcFloor(floor uint64) (stop func()) {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		return func() {}
	}
	t := &gcTuner{floor: floor, base: base, set: base}
	t.sample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t.arm()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.stopped.Swap(true) {
			return
		}
		debug.SetGCPercent(t.base)
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

// tune sets GOGC from the live heap the last collection left.
func (t *gcTuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		return
	}
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	pct := gcPercentFor(t.sample[0].Value.Uint64(), t.floor, t.base)
	// Leave small moves alone: each call takes the heap lock.
	if pct == t.set || (pct > t.set*9/10 && pct < t.set*11/10) {
		return
	}
	t.set = pct
	debug.SetGCPercent(pct)
}

// gcPercentFor is the GOGC that puts the next collection at floor bytes
// for a live heap of live bytes, or base if that comes later already. The
// runtime never collects below 4 MB × GOGC/100 either, so GOGC stays at or
// under floor/4 MB × 100: above that the minimum, not live, sets the goal.
func gcPercentFor(live, floor uint64, base int) int {
	const runtimeMin = 4 << 20
	top := int(floor * 100 / runtimeMin)
	if live == 0 {
		return base
	}
	pct := int(floor*100/live) - 100
	return max(min(pct, top), base)
}
