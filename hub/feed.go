package hub

import (
	"errors"
	"math"
	"sync"
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
	dropped bool          // a batch was refused since the dispatcher last took
	wake    chan struct{} // capacity 1
}

func (in *inbox) init(limit int) {
	in.limit = limit
	in.wake = make(chan struct{}, 1)
}

// put queues b unless the inbox is full, and never blocks. A batch that
// opens a new epoch is always queued: what waits before it belongs to a
// log that is gone, so it is dropped instead.
func (in *inbox) put(b Batch, epochChange func(uint64) bool) {
	n := 0
	for _, u := range b.Updates {
		n += u.size()
	}
	in.mu.Lock()
	switch {
	case epochChange(b.Epoch):
		clear(in.batches)
		in.batches, in.bytes, in.dropped = in.batches[:0], 0, false
		fallthrough
	case !in.dropped && in.bytes+n <= in.limit:
		b.Updates = append([]*Update(nil), b.Updates...) // the engine keeps its slice
		in.batches = append(in.batches, b)
		in.bytes += n
	default:
		in.dropped = true
	}
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// take returns what is queued and whether anything was dropped after it.
func (in *inbox) take(buf []Batch) ([]Batch, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := append(buf[:0], in.batches...)
	clear(in.batches)
	in.batches = in.batches[:0]
	dropped := in.dropped
	in.bytes, in.dropped = 0, false
	return out, dropped
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
	h.inbox.put(b, func(e uint64) bool { return e != h.feedEpoch.Swap(e) })
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
		batches, dropped := h.inbox.take(buf)
		for i := range batches {
			h.deliver(batches[i])
		}
		clear(batches)
		buf = batches
		if dropped {
			h.m.feedDropped()
			h.catchUp(math.MaxUint64)
		}
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
	offered := 0
	for _, u := range b.Updates {
		if u.Seq > h.lastDispatched.Load() {
			offered += h.dispatch(u)
		}
	}
	h.pace.observe(offered, h.cfg.Now().UnixNano())
}

// catchUp reads from the engine and dispatches what the feed did not hand
// over, up to the Seq until, or until the engine has nothing more, or the
// inbox holds the rest.
func (h *Hub) catchUp(until uint64) {
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
			// Neither dropped nor delivered: end the subscriptions that
			// may miss something rather than pretend.
			h.log.Error("read history to catch up with the feed", "err", err)
			h.skip(last, until, ErrLost)
			return
		}
		if r.Gap {
			to := r.Head
			if len(r.Updates) > 0 {
				to = r.Updates[0].Seq - 1
			}
			h.skip(last, min(to, until), ErrLost)
		}
		offered := 0
		for _, u := range r.Updates {
			if u.Seq > until {
				break
			}
			offered += h.dispatch(u)
		}
		h.pace.observe(offered, h.cfg.Now().UnixNano())
		if len(r.Updates) == 0 {
			return
		}
	}
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
	h.subs.each(func(s *Subscriber) { s.skipped(to, reason) })
	h.idx.mu.Unlock()
	h.log.Warn("updates dropped before dispatch", "from", from+1, "to", to, "reason", reason)
}

// newEpoch moves the hub to the log of epoch, whose feed continues after
// Seq after: every subscription ends with ErrLost, since its position
// means nothing in the new log.
func (h *Hub) newEpoch(epoch, after uint64) {
	h.idx.mu.Lock()
	old := h.epoch
	h.epoch = epoch
	h.lastDispatched.Store(after)
	h.subs.each(func(s *Subscriber) {
		h.m.lost()
		s.end(ErrLost)
	})
	h.idx.mu.Unlock()
	h.m.epochChanged()
	h.log.Warn("history replaced: ending every stream", "old_epoch", old, "epoch", epoch)
}
