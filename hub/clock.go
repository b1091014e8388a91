package hub

import (
	"container/heap"
	"sync"
	"time"

	"github.com/herald-hub/herald/sse"
)

// heartbeatFrame is sse.Heartbeat as bytes, written by every idle stream and
// never modified: a copy of the hub's own, since a shared exported slice
// could be changed by any importer.
var heartbeatFrame = []byte(sse.Heartbeat)

// clock is the hub's one source of time-driven work: heartbeats and token
// expiries for every subscriber run off one ticker and one timer owned by
// the clock goroutine, not a timer per connection.
type clock struct {
	mu      sync.Mutex
	expiry  expiryHeap
	changed chan struct{} // capacity 1: the earliest expiry moved
}

func (c *clock) init() {
	c.changed = make(chan struct{}, 1)
}

func (c *clock) schedule(s *Subscriber) {
	c.mu.Lock()
	heap.Push(&c.expiry, s)
	first := c.expiry[0] == s
	c.mu.Unlock()
	if first {
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}
}

func (c *clock) cancel(s *Subscriber) {
	c.mu.Lock()
	if s.heapIdx >= 0 {
		heap.Remove(&c.expiry, s.heapIdx)
	}
	c.mu.Unlock()
}

// expire ends the subscriptions whose token expired by now and returns how
// long until the next one, or -1 if none is scheduled.
func (c *clock) expire(now time.Time) time.Duration {
	c.mu.Lock()
	var due []*Subscriber
	for len(c.expiry) > 0 && !c.expiry[0].expires.After(now) {
		due = append(due, heap.Pop(&c.expiry).(*Subscriber))
	}
	next := time.Duration(-1)
	if len(c.expiry) > 0 {
		next = c.expiry[0].expires.Sub(now)
	}
	c.mu.Unlock()
	for _, s := range due {
		s.end(ErrExpired)
	}
	return next
}

// clockLoop visits one registry slot per tick, so that the heartbeat
// writes and probes of many idle streams are spread over their intervals
// instead of bunched. Heartbeats are checked on every visit, so a stream
// gets one at most a period after its idle interval is over; probes follow
// their own cursor over the slots, so each stream is probed once per
// Liveness, not once per visit.
func (h *Hub) clockLoop() {
	defer h.wg.Done()
	// One slot per tick: every subscriber is visited once per period, the
	// shorter of the heartbeat and liveness intervals.
	var tick <-chan time.Time
	period := time.Duration(0)
	for _, d := range []time.Duration{h.cfg.Heartbeat, h.cfg.Liveness} {
		if d > 0 && (period == 0 || d < period) {
			period = d
		}
	}
	step := max(period/registrySlots, 1)
	// Probes have their own cursor over the slots, moved one slot per
	// probeStep of ticked time. That is at least a tick, since Liveness is
	// at least the period: when Liveness is the period the cursor moves
	// with the visits, else it lags behind them. Each stream is then probed
	// every Liveness, exactly when Liveness is a whole number of ticks,
	// within a tick otherwise.
	var probeStep, probeDue time.Duration
	if h.cfg.Liveness > 0 {
		probeStep = max(h.cfg.Liveness/registrySlots, step)
	}
	if period > 0 {
		t := time.NewTicker(step)
		defer t.Stop()
		tick = t.C
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	slot, probeSlot := 0, 0
	arm := func() {
		next := h.clock.expire(h.cfg.Now())
		if next < 0 {
			next = time.Hour
		}
		timer.Reset(next)
	}
	arm()
	for {
		select {
		case <-h.done:
			return
		case <-tick:
			probe := -1
			if probeStep > 0 {
				if probeDue += step; probeDue >= probeStep {
					probeDue -= probeStep
					probe = probeSlot
					probeSlot = (probeSlot + 1) % registrySlots
				}
			}
			h.visitSlot(slot, probe)
			slot = (slot + 1) % registrySlots
		case <-timer.C:
			arm()
		case <-h.clock.changed:
			arm()
		}
	}
}

// visitSlot asks the idle subscribers of one slot for a heartbeat and
// probes the streams of slot probe (-1 for none) that can be probed. When
// both are the same slot, one pass does both. Probes run outside the
// registry lock.
func (h *Hub) visitSlot(slot, probe int) {
	var idle int64
	if h.cfg.Heartbeat > 0 {
		idle = h.cfg.Now().Add(-h.cfg.Heartbeat).UnixNano()
	}
	probing := h.probeBuf[:0]
	if idle != 0 || probe == slot {
		h.subs.eachInSlot(slot, func(s *Subscriber) {
			s.mu.Lock()
			if idle != 0 && s.lastWrite.Load() <= idle {
				s.hbDue = true
				s.notify()
			}
			if probe == slot && s.prober != nil {
				probing = append(probing, s)
			}
			s.mu.Unlock()
		})
	}
	if probe >= 0 && probe != slot {
		h.subs.eachInSlot(probe, func(s *Subscriber) {
			s.mu.Lock()
			if s.prober != nil {
				probing = append(probing, s)
			}
			s.mu.Unlock()
		})
	}
	for _, s := range probing {
		s.mu.Lock()
		p := s.prober
		s.mu.Unlock()
		if !p.Alive() {
			s.end(ErrGone)
		}
	}
	clear(probing)
	h.probeBuf = probing
}

// expiryHeap orders subscribers by token expiry.
type expiryHeap []*Subscriber

func (e expiryHeap) Len() int           { return len(e) }
func (e expiryHeap) Less(i, j int) bool { return e[i].expires.Before(e[j].expires) }
func (e expiryHeap) Swap(i, j int) {
	e[i], e[j] = e[j], e[i]
	e[i].heapIdx = i
	e[j].heapIdx = j
}
func (e *expiryHeap) Push(x any) {
	s := x.(*Subscriber)
	s.heapIdx = len(*e)
	*e = append(*e, s)
}
func (e *expiryHeap) Pop() any {
	old := *e
	s := old[len(old)-1]
	old[len(old)-1] = nil
	s.heapIdx = -1
	*e = old[:len(old)-1]
	return s
}
