// Package memory is the reference engine: a bounded in-memory history for a
// single node. It loses everything when the process ends, so it suits tests,
// development and deployments where resuming after a restart is not needed.
package memory

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/herald-hub/herald/hub"
)

// DefaultMaxCount is the ring capacity used when Retention.MaxCount is zero:
// memory is always bounded, whatever MaxAge says.
const DefaultMaxCount = 10_000

// Options configures an Engine. The zero value is valid.
type Options struct {
	// Retention bounds the history. MaxCount zero means DefaultMaxCount.
	Retention hub.Retention
	// Now is the clock used for retention by age; nil means time.Now.
	Now func() time.Time
}

// Engine is an in-memory hub.Engine: a ring of the most recent updates, an
// index from id to position, and a feed called synchronously by Append.
type Engine struct {
	maxCount int
	maxAge   time.Duration
	now      func() time.Time

	// turn serializes Append and the feed call that goes with it, so feed
	// calls never overlap and arrive in Seq order. It is a channel rather
	// than a mutex so that a waiting Append can give up when its ctx ends.
	turn   chan struct{}
	feed   func(hub.Batch) // set by Listen, read only under turn
	closed bool            // guarded by turn (and read under mu by readers)

	// mu guards the ring and the index. Appends hold it only to insert and
	// evict, never across the feed, so a slow feed does not block Read.
	mu    sync.RWMutex
	buf   []*hub.Update // ring; grows up to maxCount
	head  int           // index in buf of the oldest retained update
	n     int           // retained updates
	last  uint64        // Seq of the last appended update
	epoch uint64        // names this log; Reset draws a new one
	ids   map[string]uint64
	// dups holds, for ids that occur more than once in the ring, the Seqs of
	// the occurrences after the earliest (which is in ids), oldest first.
	// Updates with unique ids, the common case, never touch it, and
	// eviction never walks the ring to find the next occurrence.
	dups map[string][]uint64
	shut bool // mirror of closed under mu, for readers
}

var (
	_ hub.Engine = (*Engine)(nil)
	_ hub.Closer = (*Engine)(nil)
	_ hub.Stats  = (*Engine)(nil)
)

// New returns an empty Engine.
func New(opts Options) *Engine {
	e := &Engine{
		maxCount: opts.Retention.MaxCount,
		maxAge:   opts.Retention.MaxAge,
		now:      opts.Now,
		turn:     make(chan struct{}, 1),
		ids:      make(map[string]uint64),
		dups:     make(map[string][]uint64),
	}
	if e.maxCount <= 0 {
		e.maxCount = DefaultMaxCount
	}
	if e.now == nil {
		e.now = time.Now
	}
	e.buf = make([]*hub.Update, min(e.maxCount, 64))
	e.epoch = hub.NewEpoch()
	return e
}

// Listen implements hub.Engine.
func (e *Engine) Listen(feed func(hub.Batch)) (hub.Position, error) {
	e.turn <- struct{}{}
	defer func() { <-e.turn }()
	e.feed = feed
	e.mu.RLock()
	defer e.mu.RUnlock()
	return hub.Position{Epoch: e.epoch, Seq: e.last}, nil
}

// Reset drops the whole history and starts a new log with a new epoch,
// whose Seqs start again at 1, and tells the feed. It is what a shared
// store that lost its data looks like to the hub, for tests.
func (e *Engine) Reset() {
	e.turn <- struct{}{}
	defer func() { <-e.turn }()
	if e.closed {
		return
	}
	e.mu.Lock()
	clear(e.buf)
	e.head, e.n, e.last = 0, 0, 0
	clear(e.ids)
	clear(e.dups)
	e.epoch = hub.NewEpoch()
	epoch := e.epoch
	e.mu.Unlock()
	if e.feed != nil {
		e.feed(hub.Batch{Epoch: epoch})
	}
}

// Append implements hub.Engine. The feed has been called with u when Append
// returns nil.
func (e *Engine) Append(ctx context.Context, u *hub.Update) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case e.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-e.turn }()
	if e.closed {
		return hub.ErrClosed
	}

	e.mu.Lock()
	e.last++
	u.Seq = e.last
	e.push(u)
	e.evict(e.now())
	epoch := e.epoch
	e.mu.Unlock()

	if e.feed != nil {
		e.feed(hub.Batch{Epoch: epoch, After: u.Seq - 1, Updates: []*hub.Update{u}})
	}
	return nil
}

// push adds u at the end of the ring, evicting the oldest update when full.
func (e *Engine) push(u *hub.Update) {
	if e.n == len(e.buf) {
		if len(e.buf) < e.maxCount {
			e.grow()
		} else {
			e.dropOldest()
		}
	}
	e.buf[(e.head+e.n)%len(e.buf)] = u
	e.n++
	if _, ok := e.ids[u.ID]; ok {
		e.dups[u.ID] = append(e.dups[u.ID], u.Seq)
	} else {
		e.ids[u.ID] = u.Seq
	}
}

func (e *Engine) grow() {
	nb := make([]*hub.Update, min(2*len(e.buf), e.maxCount))
	for i := range e.n {
		nb[i] = e.buf[(e.head+i)%len(e.buf)]
	}
	e.buf, e.head = nb, 0
}

// dropOldest removes the oldest update. Eviction goes in Seq order, so the
// evicted update is always the earliest occurrence of its id: the one in
// ids, replaced by the next occurrence if there is one.
func (e *Engine) dropOldest() {
	u := e.buf[e.head]
	e.buf[e.head] = nil
	e.head = (e.head + 1) % len(e.buf)
	e.n--
	if next, ok := e.dups[u.ID]; ok {
		e.ids[u.ID] = next[0]
		if len(next) == 1 {
			delete(e.dups, u.ID)
		} else {
			e.dups[u.ID] = next[1:]
		}
	} else {
		delete(e.ids, u.ID)
	}
}

// evict drops from the front the updates older than maxAge. Like every
// engine it only looks at the front: an old update behind a recent one waits
// for it.
func (e *Engine) evict(now time.Time) {
	if e.maxAge <= 0 {
		return
	}
	cutoff := now.Add(-e.maxAge)
	for e.n > 0 && e.buf[e.head].Time.Before(cutoff) {
		e.dropOldest()
	}
}

// expiredFront reports whether the oldest update is past maxAge. Call with
// mu held.
func (e *Engine) expiredFront(now time.Time) bool {
	return e.maxAge > 0 && e.n > 0 && e.buf[e.head].Time.Before(now.Add(-e.maxAge))
}

// rlock read-locks mu after dropping expired updates, so that retention by
// age holds even when nothing is appended. Each update is evicted once, so
// readers take the write lock rarely.
func (e *Engine) rlock() error {
	e.mu.RLock()
	if now := e.now(); e.expiredFront(now) {
		e.mu.RUnlock()
		e.mu.Lock()
		e.evict(now)
		e.mu.Unlock()
		e.mu.RLock()
	}
	if e.shut {
		e.mu.RUnlock()
		return hub.ErrClosed
	}
	return nil
}

// Lookup implements hub.Engine.
func (e *Engine) Lookup(ctx context.Context, id string) (hub.Position, bool, error) {
	if err := e.rlock(); err != nil {
		return hub.Position{}, false, err
	}
	defer e.mu.RUnlock()
	seq, ok := e.ids[id]
	if !ok {
		seq = e.last
	}
	return hub.Position{Epoch: e.epoch, Seq: seq}, ok, nil
}

// Read implements hub.Engine.
func (e *Engine) Read(ctx context.Context, after hub.Position, limit int) (hub.Range, error) {
	if limit <= 0 {
		return hub.Range{}, errors.New("memory: read limit must be positive")
	}
	if err := e.rlock(); err != nil {
		return hub.Range{}, err
	}
	defer e.mu.RUnlock()
	if after.Epoch != e.epoch {
		return hub.Range{}, hub.ErrEpoch
	}
	r := hub.Range{Head: e.last}
	if after.Seq >= e.last {
		return r, nil
	}
	// The ring holds Seqs last-n+1 .. last, without gaps.
	first := e.last - uint64(e.n) + 1
	r.Gap = after.Seq+1 < first
	start := 0
	if after.Seq >= first {
		start = int(after.Seq - first + 1)
	}
	if start == e.n {
		return r, nil
	}
	r.Updates = make([]*hub.Update, 0, min(limit, e.n-start))
	for i := start; i < e.n && len(r.Updates) < limit; i++ {
		r.Updates = append(r.Updates, e.buf[(e.head+i)%len(e.buf)])
	}
	return r, nil
}

// HistoryLen implements hub.Stats.
func (e *Engine) HistoryLen() int {
	if e.rlock() != nil {
		return 0
	}
	defer e.mu.RUnlock()
	return e.n
}

// Close implements hub.Closer. It waits for the Append in progress, if any,
// and its feed call; afterwards Append, Read and Lookup return hub.ErrClosed.
func (e *Engine) Close() error {
	e.turn <- struct{}{}
	defer func() { <-e.turn }()
	if e.closed {
		return nil
	}
	e.closed = true
	e.feed = nil
	e.mu.Lock()
	e.shut = true
	clear(e.buf)
	e.ids, e.dups = nil, nil
	e.n = 0
	e.mu.Unlock()
	return nil
}
