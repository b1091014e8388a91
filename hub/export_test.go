package hub

import "time"

// SetPace replaces the automatic write delay's thresholds (offered frames
// per second per core) and its top, and leaves the scheduling waits out
// of it so that the test's own machine does not move the delay. Call it
// before anything is published.
func SetPace(h *Hub, low, high float64, top time.Duration) {
	h.pace.low, h.pace.high, h.pace.top = low, high, top
	h.pace.wait = func() waits { return waits{} }
}

// SetSchedWait replaces where the hub reads its goroutines' waits for a
// CPU: the median and 90th percentile in seconds, over n waits.
func SetSchedWait(h *Hub, wait func() (median, p90 float64, n uint64)) {
	h.pace.wait = func() waits {
		m, p, n := wait()
		return waits{median: m, p90: p, n: n}
	}
}
