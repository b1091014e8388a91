package server

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestWatchCrowd: memory is given back once per storm: after a crowd
// arrived and stopped growing, and after half of it left; never while it
// grows, and not for small moves.
func TestWatchCrowd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = time.Second
		var n, releases atomic.Int64
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			watchCrowd(ctx, period, func() int { return int(n.Load()) }, func() { releases.Add(1) })
		}()
		step := func(count int, want int64, what string) {
			t.Helper()
			n.Store(int64(count))
			time.Sleep(period)
			synctest.Wait()
			if got := releases.Load(); got != want {
				t.Fatalf("%s: %d releases, want %d", what, got, want)
			}
		}
		step(100, 0, "a few subscribers")
		step(5_000, 0, "a storm under way")
		step(10_000, 0, "still growing")
		step(10_000, 1, "the storm is over")
		step(10_000, 1, "quiet")
		step(10_300, 1, "a few more")
		step(10_300, 1, "quiet again: fewer than releaseMin came")
		step(6_000, 1, "some left, not half")
		step(5_000, 2, "half of the peak left")
		step(5_000, 2, "quiet after leaving")
		cancel()
		<-done
	})
}
