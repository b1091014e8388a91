package main

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live, roots, floor uint64
		base, want         int
	}{
		{live: 2 * mb, floor: 32 * mb, base: 100, want: 800}, // the runtime's minimum does the rest
		{live: 8 * mb, floor: 32 * mb, base: 100, want: 300},
		{live: 8 * mb, roots: 8 * mb, floor: 32 * mb, base: 100, want: 150},  // stacks count
		{live: 1 * mb, roots: 34 * mb, floor: 32 * mb, base: 100, want: 100}, // thousands of goroutines
		{live: 16 * mb, floor: 32 * mb, base: 100, want: 100},
		{live: 64 * mb, floor: 32 * mb, base: 100, want: 100}, // never below GOGC
		{live: 8 * mb, floor: 32 * mb, base: 400, want: 400},
		{live: 1, floor: 32 * mb, base: 100, want: 800},
		{live: 1, floor: 32 * mb, base: 1000, want: 1000},
		{live: 0, floor: 32 * mb, base: 100, want: 100},
	} {
		if got := gcPercentFor(c.live, c.roots, c.floor, c.base); got != c.want {
			t.Errorf("gcPercentFor(%d, %d, %d, %d) = %d, want %d", c.live, c.roots, c.floor, c.base, got, c.want)
		}
	}
}

var gcSink []byte

// collections counts the garbage collections while 256 MB of short-lived
// garbage is allocated on a small live heap.
func collections() uint32 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.NumGC
	for range 4096 {
		gcSink = make([]byte, 64<<10)
	}
	runtime.ReadMemStats(&ms)
	return ms.NumGC - before
}

// TestGCFloor: with the floor, the same garbage costs far fewer
// collections; stopping restores the GOGC the process had.
func TestGCFloor(t *testing.T) {
	t.Setenv("GOGC", "") // empty is the default, to the runtime and to gcFloor
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	without := collections()
	stop := gcFloor(64 << 20)
	inner := gcFloor(64 << 20) // nested, as when serve runs twice in one process
	inner()
	// The floor takes effect after the first collection it sees.
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pct := debug.SetGCPercent(-1)
		debug.SetGCPercent(pct)
		if pct > 100 {
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("GOGC still %d after a collection with the floor on", pct)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	with := collections()
	stop()
	t.Logf("collections for 256 MB of garbage: %d without the floor, %d with it", without, with)
	// 256 MB of garbage with a 64 MB goal: about four collections, not none.
	if with*4 > without || with == 0 {
		t.Errorf("%d collections with a 64 MB floor against %d without; want a few, a quarter or fewer", with, without)
	}
	if pct := debug.SetGCPercent(100); pct != 100 {
		t.Errorf("GOGC %d after stop, want the 100 it started with", pct)
	}
	stop() // twice is harmless
	if pct := debug.SetGCPercent(100); pct != 100 {
		t.Errorf("GOGC %d after a second stop", pct)
	}
}

// TestGCFloorLeavesGOGC: a GOGC in the environment is the operator's choice.
func TestGCFloorLeavesGOGC(t *testing.T) {
	t.Setenv("GOGC", "50")
	base := debug.SetGCPercent(50)
	defer debug.SetGCPercent(base)
	stop := gcFloor(64 << 20)
	defer stop()
	for range 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	if pct := debug.SetGCPercent(50); pct != 50 {
		t.Errorf("GOGC %d with GOGC=50 in the environment, want 50 left alone", pct)
	}
}
