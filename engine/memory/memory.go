// Package memory is the reference engine: a bounded in-memory history for a
// single node. It loses everything when the process ends, so it suits tests,
// development and deployments where resuming after a restart is not needed.
package memory

import (
	"context"
	"errors"
	"sort"
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

// Engine is an in-memory hub.Engine: a ring of the most recent updates of
// each kind (presence updates apart, see hub.Retention), an index from id to
// position, and a feed called synchronously by Append.
type Engine struct {
	maxAge time.Duration
	now    func() time.Time

	// turn serializes Append and the feed call that goes with it, so feed
	// calls never overlap and arrive in Seq order. It is a channel rather
	// than a mutex so that a waiting Append can give up when its ctx ends.
	turn   chan struct{}
	feed   func(hub.Batch) // set by Listen, read only under turn
	closed bool            // guarded by turn (and read under mu by readers)

	// mu guards the rings and the index. Appends hold it only to insert
	// and evict, never across the feed, so a slow feed does not block Read.
	mu sync.RWMutex
	// rings hold the retained updates of each kind, in Seq order: the
	// others, then presence updates. Their Seqs interleave.
	rings [2]ring
	// dropped is, per kind, the Seq of the newest update retention
	// dropped: a reader after a smaller Seq has lost one (Range.Gap,
	// Range.PresenceGap).
	dropped [2]uint64
	last    uint64 // Seq of the last appended update
	epoch   uint64 // names this log; Reset draws a new one
	ids     map[string]uint64
	// dups holds, for ids that occur more than once in the rings, the
	// Seqs of the occurrences after the earliest (which is in ids), oldest
	// first. Updates with unique ids, the common case, never touch it,
	// and eviction never walks a ring to find the next occurrence.
	dups map[string][]uint64
	shut bool // mirror of closed under mu, for readers
}

// The kinds of update, as indexes of Engine.rings and Engine.dropped.
const (
	others   = 0
	presence = 1
)

func kindOf(u *hub.Update) int {
	if u.Presence {
		return presence
	}
	return others
}

var (
	_ hub.Engine = (*Engine)(nil)
	_ hub.Closer = (*Engine)(nil)
	_ hub.Stats  = (*Engine)(nil)
)

// New returns an empty Engine.
func New(opts Options) *Engine {
	e := &Engine{
		maxAge: opts.Retention.MaxAge,
		now:    opts.Now,
		turn:   make(chan struct{}, 1),
		ids:    make(map[string]uint64),
		dups:   make(map[string][]uint64),
	}
	maxCount, maxPresence := opts.Retention.MaxCount, opts.Retention.MaxPresence
	if maxCount <= 0 {
		maxCount = DefaultMaxCount
	}
	if maxPresence <= 0 {
		maxPresence = hub.DefaultMaxPresence
	}
	e.rings[others].init(maxCount)
	e.rings[presence].init(maxPresence)
	if e.now == nil {
		e.now = time.Now
	}
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
	for k := range e.rings {
		e.rings[k].clear()
	}
	e.dropped = [2]uint64{}
	e.last = 0
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

// push adds u at the end of its kind's ring, dropping the oldest update of
// that kind when the ring is full.
func (e *Engine) push(u *hub.Update) {
	k := kindOf(u)
	if e.rings[k].full() {
		e.dropOldest(k)
	}
	e.rings[k].push(u)
	if _, ok := e.ids[u.ID]; ok {
		e.dups[u.ID] = append(e.dups[u.ID], u.Seq)
	} else {
		e.ids[u.ID] = u.Seq
	}
}

// dropOldest removes the oldest update of kind k. Dropping one of the
// others drops the presence updates before it too, so that the log keeps
// a single oldest end.
func (e *Engine) dropOldest(k int) {
	u := e.rings[k].pop()
	e.dropped[k] = u.Seq
	e.unindex(u)
	if k != others {
		return
	}
	p := &e.rings[presence]
	for p.n > 0 && p.front().Seq < u.Seq {
		v := p.pop()
		e.dropped[presence] = v.Seq
		e.unindex(v)
	}
}

// unindex forgets the occurrence of u's id at u.Seq. Each kind drops in
// Seq order, but presence updates go from the middle of the log, so the
// occurrence dropped is not always the earliest of its id.
func (e *Engine) unindex(u *hub.Update) {
	next, dup := e.dups[u.ID]
	switch {
	case e.ids[u.ID] != u.Seq:
		for i, seq := range next {
			if seq == u.Seq {
				next = append(next[:i], next[i+1:]...)
				break
			}
		}
		if len(next) == 0 {
			delete(e.dups, u.ID)
		} else {
			e.dups[u.ID] = next
		}
	case !dup:
		delete(e.ids, u.ID)
	default:
		e.ids[u.ID] = next[0]
		if len(next) == 1 {
			delete(e.dups, u.ID)
		} else {
			e.dups[u.ID] = next[1:]
		}
	}
}

// evict drops from the front of each ring the updates older than maxAge.
// Like every engine it only looks at the fronts: an old update behind a
// recent one waits for it.
func (e *Engine) evict(now time.Time) {
	if e.maxAge <= 0 {
		return
	}
	cutoff := now.Add(-e.maxAge)
	for k := range e.rings {
		for r := &e.rings[k]; r.n > 0 && r.front().Time.Before(cutoff); {
			e.dropOldest(k)
		}
	}
}

// expiredFront reports whether the oldest update of a kind is past maxAge.
// Call with mu held.
func (e *Engine) expiredFront(now time.Time) bool {
	if e.maxAge <= 0 {
		return false
	}
	cutoff := now.Add(-e.maxAge)
	for k := range e.rings {
		if r := &e.rings[k]; r.n > 0 && r.front().Time.Before(cutoff) {
			return true
		}
	}
	return false
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
	r.Gap = after.Seq < e.dropped[others]
	r.PresenceGap = after.Seq < e.dropped[presence]
	a, b := &e.rings[others], &e.rings[presence]
	i, j := a.after(after.Seq), b.after(after.Seq)
	n := min(limit, a.n-i+b.n-j)
	if n == 0 {
		return r, nil
	}
	r.Updates = make([]*hub.Update, 0, n)
	for len(r.Updates) < n {
		if j == b.n || i < a.n && a.at(i).Seq < b.at(j).Seq {
			r.Updates = append(r.Updates, a.at(i))
			i++
		} else {
			r.Updates = append(r.Updates, b.at(j))
			j++
		}
	}
	return r, nil
}

// HistoryLen implements hub.Stats.
func (e *Engine) HistoryLen() int {
	if e.rlock() != nil {
		return 0
	}
	defer e.mu.RUnlock()
	return e.rings[others].n + e.rings[presence].n
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
	for k := range e.rings {
		e.rings[k].clear()
	}
	e.ids, e.dups = nil, nil
	e.mu.Unlock()
	return nil
}

// ring is a bounded queue of updates in Seq order, growing up to max.
type ring struct {
	buf  []*hub.Update
	head int // index in buf of the oldest update
	n    int // updates held
	max  int
}

func (r *ring) init(max int) {
	r.max = max
	r.buf = make([]*hub.Update, min(max, 64))
}

func (r *ring) full() bool { return r.n == r.max }

func (r *ring) at(i int) *hub.Update { return r.buf[(r.head+i)%len(r.buf)] }

func (r *ring) front() *hub.Update { return r.buf[r.head] }

// push appends u; the ring must not be full.
func (r *ring) push(u *hub.Update) {
	if r.n == len(r.buf) {
		nb := make([]*hub.Update, min(2*len(r.buf), r.max))
		for i := range r.n {
			nb[i] = r.at(i)
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = u
	r.n++
}

// pop removes and returns the oldest update.
func (r *ring) pop() *hub.Update {
	u := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return u
}

// after returns the index of the first update whose Seq is greater than
// seq, or n.
func (r *ring) after(seq uint64) int {
	return sort.Search(r.n, func(i int) bool { return r.at(i).Seq > seq })
}

func (r *ring) clear() {
	clear(r.buf)
	r.head, r.n = 0, 0
}
