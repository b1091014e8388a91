package mercure

import (
	"net/http"
	"net/netip"
	"time"

	"golang.org/x/time/rate"
)

// SetStageHook makes h call hold at the named stages of every subscribe
// request ("admitted", "subscribed", "hijacked"), which may block to hold
// the request there.
func SetStageHook(h *Handler, hold func(stage string)) { h.hold = hold }

// ClientAddr is the address h takes r to come from, for per-address limits.
func ClientAddr(h *Handler, r *http.Request) netip.Addr { return h.clientAddr(r) }

// KeyedRate is the per-publisher token bucket, for tests.
type KeyedRate = keyedRate

func NewKeyedRate(perSecond float64, burst int) *KeyedRate {
	return newKeyedRate(rate.Limit(perSecond), burst)
}

func (k *keyedRate) Allow(key string, now time.Time) (bool, time.Duration) { return k.allow(key, now) }
func (k *keyedRate) Len() int                                              { k.mu.Lock(); defer k.mu.Unlock(); return len(k.buckets) }

// Parked is the number of subscribers in their grace period.
func Parked(h *Handler) int {
	h.presence.mu.Lock()
	defer h.presence.mu.Unlock()
	return h.presence.nParked
}

// Connected is the number of subscribers with an open stream.
func Connected(h *Handler) int {
	h.presence.mu.Lock()
	defer h.presence.mu.Unlock()
	n := 0
	for _, pc := range h.presence.conns {
		if pc.left.IsZero() {
			n++
		}
	}
	return n
}
