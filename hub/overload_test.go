package hub_test

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/herald-hub/herald/hub"
)

// TestOverloadedByDispatchLag: an update the dispatcher has not offered
// for longer than OverloadLag makes the hub overloaded, and it stays so
// for two seconds after the dispatcher has caught up.
func TestOverloadedByDispatchLag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The stalled dispatcher holds a subscriber's lock, which keeps
		// the bubble's clock still: the hub reads a clock of its own.
		var ahead atomic.Int64
		now := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
		step := func(d time.Duration) { ahead.Add(int64(d)) }
		f := newFixture(t, hub.Config{Heartbeat: -1, Liveness: -1, Now: now, OverloadLag: time.Second, OverloadWait: -1})
		if f.hub.Overloaded() || f.hub.DispatchLag() != 0 {
			t.Fatalf("idle hub: overloaded %v, lag %v", f.hub.Overloaded(), f.hub.DispatchLag())
		}
		release := f.stallDispatcher(t.Context())
		step(time.Second)
		if lag := f.hub.DispatchLag(); lag != time.Second {
			t.Fatalf("lag %v a second after the dispatcher stalled", lag)
		}
		if f.hub.Overloaded() {
			t.Fatal("overloaded at a lag of exactly OverloadLag")
		}
		step(time.Millisecond)
		if !f.hub.Overloaded() {
			t.Fatal("not overloaded at a lag past OverloadLag")
		}
		f.publish("q", "queued", "", false) // waits behind the stalled one
		release()
		waitFor(t, "the dispatcher to catch up", func() bool { return f.hub.DispatchLag() == 0 })
		if !f.hub.Overloaded() {
			t.Fatal("no longer overloaded at once after catching up; it should hold")
		}
		step(2*time.Second - time.Millisecond)
		if !f.hub.Overloaded() {
			t.Fatal("the hold ended early")
		}
		step(time.Millisecond)
		if f.hub.Overloaded() {
			t.Fatal("still overloaded two seconds after the lag was gone")
		}
	})
}

// TestOverloadedBySchedWait: goroutines waiting longer than OverloadWait
// for a CPU (the 90th percentile of a pacing window) make the hub
// overloaded; a shorter wait, or a figure from a window long past, does
// not.
func TestOverloadedBySchedWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{Heartbeat: -1, Liveness: -1, OverloadLag: -1, OverloadWait: 20 * time.Millisecond})
		var wait float64
		hub.SetSchedWait(f.hub, func() (float64, float64, uint64) { return wait / 10, wait, 1000 })
		window := func() { // two dispatches a pacing window apart close one
			f.publish("t", "", "", false)
			time.Sleep(150 * time.Millisecond)
			f.publish("t", "", "", false)
			synctest.Wait()
		}
		wait = 0.015
		window()
		if got := f.hub.SchedWait(); got != 1500*time.Microsecond {
			t.Fatalf("SchedWait %v, want the window's median, 1.5ms", got)
		}
		if f.hub.Overloaded() {
			t.Fatal("overloaded at a 90th percentile of 15ms, under OverloadWait")
		}
		wait = 0.025
		window()
		if !f.hub.Overloaded() {
			t.Fatal("not overloaded at a 90th percentile of 25ms")
		}
		// Nothing dispatched for over a second: the figure is stale, and
		// after the hold the hub is no longer overloaded.
		time.Sleep(2*time.Second + time.Millisecond)
		if got := f.hub.SchedWait(); got != 0 {
			t.Fatalf("SchedWait %v from a window long past", got)
		}
		if f.hub.Overloaded() {
			t.Fatal("overloaded on a stale wait")
		}
	})
}
