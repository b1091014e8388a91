package hub

import "time"

// SetPace replaces the automatic write delay's thresholds (offered frames
// per second per core) and its top, and leaves the scheduling waits out
// of it so that the test's own machine does not move the delay. Call it
// before anything is published.
func SetPace(h *Hub, low, high float64, top time.Duration) {
	h.pace.low, h.pace.high, h.pace.top = low, high, top
	h.pace.wait = func() (float64, uint64) { return 0, 0 }
}

// SetSchedWait replaces where the hub reads its goroutines' median wait
// for a CPU (and how many waits that median covers).
func SetSchedWait(h *Hub, wait func() (sec float64, n uint64)) {
	h.pace.wait = wait
}
