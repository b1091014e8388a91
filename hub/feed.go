package hub

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// The engine's live feed never waits for fan-out: onAppend puts the batch
// in the inbox, bounded in bytes, and returns. When the inbox is full the
// batch is dropped and the inbox remembers that something was; the
// dispatcher then reads what it missed from the engine, which holds every
// update before feeding it. Appends therefore never block on subscribers,
// however slow dispatch gets, and nothing is lost while the history still
// holds it. When it does not (the dispatcher fell behind by more than the
// retention), the subscribers that may have missed an update are ended with
// ErrLost, so they reconnect and are told.

// defaultInboxBytes bounds the frames waiting for the dispatcher.
const defaultInboxBytes = 16 << 20

type inbox struct {
	mu      sync.Mutex
	batches []Batch
	bytes   int
	limit   int
	dropped bool // a batch was refused since the dispatcher last took
	// announced is the last Seq the feed has handed over in the current
	// epoch, dropped batches included: how far a catch-up must read.
	announced uint64
	wake      chan struct{} // capacity 1
	// oldest is when the oldest batch not yet dispatched was handed over
	// (unix nanos), zero when the dispatcher has nothing left: what the
	// dispatch lag is measured from. It stays set while the dispatcher
	// works through what it took, and while it catches up on dropped
	// batches.
	oldest atomic.Int64
}

func (in *inbox) init(limit int) {
	in.limit = limit
	in.wake = make(chan struct{}, 1)
}

// put queues b unless the inbox is full, and never blocks. A batch that
// opens a new epoch is always queued: what waits before it belongs to a
// log that is gone, so it is dropped instead.
func (in *inbox) put(b Batch, now int64, epochChange func(uint64) bool) {
	n := 0
	for _, u := range b.Updates {
		n += u.size()
	}
	last := b.After
	if k := len(b.Updates); k > 0 {
		last = b.Updates[k-1].Seq
	}
	b.at = now
	in.mu.Lock()
	if in.oldest.Load() == 0 {
		in.oldest.Store(now)
	}
	switch {
	case epochChange(b.Epoch):
		clear(in.batches)
		in.batches, in.bytes, in.dropped, in.announced = in.batches[:0], 0, false, 0
		fallthrough
	case !in.dropped && in.bytes+n <= in.limit:
		b.Updates = append([]*Update(nil), b.Updates...) // the engine keeps its slice
		in.batches = append(in.batches, b)
		in.bytes += n
	default:
		in.dropped = true
	}
	in.announced = max(in.announced, last)
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// take returns what is queued, whether anything was dropped after it,
// and the last Seq the feed announced.
func (in *inbox) take(buf []Batch) ([]Batch, bool, uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := append(buf[:0], in.batches...)
	clear(in.batches)
	in.batches = in.batches[:0]
	dropped := in.dropped
	in.bytes, in.dropped = 0, false
	return out, dropped, in.announced
}

// dispatched records that the dispatcher has offered everything it took:
// the lag is now measured from the next batch waiting, if any.
func (in *inbox) dispatched() {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case in.dropped:
		// The next take catches up from a batch it never saw: the lag
		// runs on from where it was.
	case len(in.batches) > 0:
		in.oldest.Store(in.batches[0].at)
	default:
		in.oldest.Store(0)
	}
}

// next returns the After of the first queued batch of epoch, if any: where
// a catch-up read may stop, since the feed has the rest.
func (in *inbox) next(epoch uint64) (uint64, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.batches) == 0 || in.batches[0].Epoch != epoch {
		return 0, false
	}
	return in.batches[0].After, true
}

// onAppend is the engine's live feed.
func (h *Hub) onAppend(b Batch) {
	h.inbox.put(b, h.cfg.Now().UnixNano(), func(e uint64) bool { return e != h.feedEpoch.Swap(e) })
}

// dispatchLoop is the only goroutine that offers updates to subscribers, so
// each subscriber sees them in Seq order.
func (h *Hub) dispatchLoop() {
	defer h.wg.Done()
	var buf []Batch
	for {
		select {
		case <-h.done:
			return
		case <-h.inbox.wake:
		}
		batches, dropped, announced := h.inbox.take(buf)
		for i := range batches {
			h.deliver(batches[i])
		}
		clear(batches)
		buf = batches
		if dropped {
			h.m.feedDropped()
			h.catchUp(announced)
		}
		h.inbox.dispatched()
	}
}

// deliver dispatches one batch from the feed: a new epoch first ends every
// subscription, a skip is read from the engine, updates dispatched already
// (by a catch-up) are passed over.
func (h *Hub) deliver(b Batch) {
	if b.Epoch != h.epoch {
		h.newEpoch(b.Epoch, b.After)
	}
	if b.After > h.lastDispatched.Load() {
		h.catchUp(b.After)
	}
	offered, hole := 0, false
	for _, u := range b.Updates {
		if last := h.lastDispatched.Load(); u.Seq > last {
			hole = hole || u.Seq > last+1
			offered += h.dispatch(u)
		}
	}
	h.pace.observe(offered, h.cfg.Now().UnixNano())
	if hole {
		// Only presence updates dropped from the middle of the log leave
		// holes in a batch; the ones who may want them lost some.
		h.losePresence()
	}
}

// catchUp reads from the engine and dispatches what the feed did not hand
// over, up to the Seq until, or until the engine has nothing more, or the
// inbox holds the rest. A read that fails is tried again, backing off, for
// as long as the hub runs: skipping would lose updates the history still
// holds, and a later update must not overtake them.
func (h *Hub) catchUp(until uint64) {
	backoff := catchUpRetryMin
	presenceLost := false
	for {
		last := h.lastDispatched.Load()
		if last >= until {
			return
		}
		if next, ok := h.inbox.next(h.epoch); ok && next <= last {
			return
		}
		select {
		case <-h.done:
			return
		default:
		}
		r, err := h.engine.Read(h.ctx, Position{Epoch: h.epoch, Seq: last}, h.cfg.ReplayBatch)
		if errors.Is(err, ErrEpoch) || errors.Is(err, ErrClosed) || h.ctx.Err() != nil {
			// A new epoch comes through the feed, which ends every
			// subscription; a closed engine or hub delivers nothing more.
			return
		}
		if err != nil {
			h.log.Error("read history to catch up with the feed; retrying", "err", err, "after", last, "retry_in", backoff)
			if !h.pause(backoff) {
				return
			}
			backoff = min(2*backoff, catchUpRetryMax)
			continue
		}
		backoff = catchUpRetryMin
		if r.Gap {
			to := r.Head
			if len(r.Updates) > 0 {
				to = r.Updates[0].Seq - 1
			}
			h.skip(last, min(to, until), ErrLost)
		}
		if r.PresenceGap && !presenceLost {
			// Presence updates the dispatcher had not offered were
			// dropped from the middle of the history: the live
			// subscribers that may want them have lost some.
			presenceLost = true
			h.losePresence()
		}
		offered, past := 0, false
		for _, u := range r.Updates {
			if u.Seq > until {
				past = true
				break
			}
			offered += h.dispatch(u)
		}
		h.pace.observe(offered, h.cfg.Now().UnixNano())
		if past {
			// Nothing up to until is left to read: what the history
			// no longer holds there were presence updates dropped from
			// the middle (said above, to those they concern), so the
			// dispatcher passes over them rather than read again.
			h.passOver(until)
			return
		}
		if len(r.Updates) == 0 {
			return
		}
	}
}

// passOver moves the dispatcher to to, past Seqs that hold nothing it
// can offer any more, ending nobody.
func (h *Hub) passOver(to uint64) {
	h.idx.mu.Lock()
	if to > h.lastDispatched.Load() {
		h.lastDispatched.Store(to)
		h.lastID.Store(nil)
	}
	h.idx.mu.Unlock()
}

// skip moves the dispatcher past (from, to], updates it will never offer,
// and ends with reason every live subscription, which may have wanted one
// of them. Subscriptions still replaying will read that range themselves
// and find it gone, so their pending updates restart after it.
func (h *Hub) skip(from, to uint64, reason error) {
	if to <= from {
		return
	}
	h.idx.mu.Lock()
	h.lastDispatched.Store(to)
	h.lastID.Store(nil)
	h.subs.each(func(s *Subscriber) { s.skipped(to, reason) })
	h.idx.mu.Unlock()
	h.log.Warn("updates dropped before dispatch", "from", from+1, "to", to, "reason", reason)
}

// losePresence ends with ErrLost every subscription that may want
// presence updates, when some were dropped before the dispatcher offered
// them. Those still replaying end too: one may be past its last read and
// about to take its queue, which will never hold the dropped ones.
func (h *Hub) losePresence() {
	n := 0
	h.subs.each(func(s *Subscriber) {
		if s.presence {
			n++
			h.m.lost()
			s.end(ErrLost)
		}
	})
	h.log.Warn("presence updates dropped before dispatch", "ended", n)
}

// newEpoch moves the hub to the log of epoch, whose feed continues after
// Seq after: every subscription ends with ErrLost, since its position
// means nothing in the new log.
func (h *Hub) newEpoch(epoch, after uint64) {
	h.idx.mu.Lock()
	old := h.epoch
	h.epoch = epoch
	h.origin, h.originKnown = after, true
	h.lastDispatched.Store(after)
	h.lastID.Store(nil)
	h.subs.each(func(s *Subscriber) {
		h.m.lost()
		s.end(ErrLost)
	})
	h.idx.mu.Unlock()
	h.m.epochChanged()
	h.log.Warn("history replaced: ending every stream", "old_epoch", old, "epoch", epoch)
}

// Bounds of the wait between catch-up reads that fail.
const (
	catchUpRetryMin = 50 * time.Millisecond
	catchUpRetryMax = 2 * time.Second
)

// pause waits d, or until the hub closes, and reports whether it waited.
func (h *Hub) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-h.done:
		return false
	}
}
