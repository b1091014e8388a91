package hub

import "time"

// SetPace replaces the automatic write delay's thresholds (offered frames
// per second per core) and its top. Call it before anything is published.
func SetPace(h *Hub, low, high float64, top time.Duration) {
	h.pace.low, h.pace.high, h.pace.top = low, high, top
}
