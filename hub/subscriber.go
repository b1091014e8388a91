package hub

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// EarliestID is the reserved Last-Event-ID value that asks for the whole
// retained history, and the resume point reported when the requested id
// is unknown.
const EarliestID = "earliest"

// SubscribeOptions describe a new subscription.
type SubscribeOptions struct {
	// Matchers select the topics the subscriber listens to (routing).
	Matchers []*Matcher
	// CanRead reports whether the subscriber may receive a private update
	// with these topics. Nil means it receives public updates only.
	CanRead func(topics []string) bool
	// Resume is true when the client sent a last event id, in LastEventID.
	Resume      bool
	LastEventID string
	// Expires closes the stream at that time; zero means never.
	Expires time.Time
	// Subject is the token subject the subscription is counted against
	// for Config.MaxPatternsPerSubject; empty for anonymous subscribers.
	Subject string
	// Presence is true when the subscriber may receive presence updates
	// (Update.Presence): a presence update that retention dropped before
	// it was read (Range.PresenceGap) is then a loss for it, reported
	// like any other. False means no presence update is for it, and
	// their loss does not concern it. When in doubt, true.
	Presence bool
	// OnLive, when set, is called once by Serve when the subscription
	// goes live: once its replay has written everything up to the
	// handover, or at once when it does not replay. It is not called for
	// a subscription that ends before. It runs on Serve's goroutine and
	// must not block. A caller that traces the request ends its span
	// there, so that no span lasts as long as a stream.
	OnLive func()
}

// Stream is where a subscriber's frames go: an HTTP response in practice.
type Stream interface {
	io.Writer
	// Flush sends what was written to the peer.
	Flush() error
	// SetWriteDeadline bounds the next writes and flush.
	SetWriteDeadline(time.Time) error
}

// Prober is implemented by streams that can tell, without blocking,
// whether their peer is still there. The hub's clock probes them every
// Config.Liveness and ends the subscription of a departed peer, so a
// stream that nobody reads still notices a closed connection promptly.
// Alive may be called concurrently with Write and Flush.
type Prober interface {
	Alive() bool
}

type subState uint8

const (
	stateReplaying subState = iota
	stateLive
	stateEnded
)

// Subscriber is one subscription: its matchers, its authorization and its
// bounded queue of frames. Serve writes it to a Stream.
type Subscriber struct {
	h        *Hub
	matchers []*Matcher
	canRead  func([]string) bool
	expires  time.Time
	subject  string
	presence bool // SubscribeOptions.Presence
	resumed  string
	serial   uint64
	epoch    uint64 // of the log the replay reads

	wake      chan struct{} // capacity 1: "something changed"
	lastWrite atomic.Int64  // unix nanos of the last flush, for heartbeats
	heapIdx   int           // position in the clock's expiry heap, -1 if none

	mu    sync.Mutex
	state subState
	// cursor is the Seq of the last update the dispatcher has dealt with
	// for this subscriber (queued, passed over, or skipped by the hub), or
	// where the subscriber starts: the dispatcher's position when it
	// registered, the head after an unknown id, where its replay went live.
	cursor uint64
	// Live, queue holds the frames waiting for the writer. Replaying, it
	// holds every update for this subscriber that the dispatcher offered
	// after the Seq since, for the handover (see replay).
	queue  []*Update // shared read-only
	queued int       // bytes in queue
	since  uint64
	hbDue  bool
	reason error // why the subscription ended, once it has

	// Owned by Serve (and Subscribe before it).
	from  uint64    // where the replay reads next
	first []*Update // the replay's first batch, read by Subscribe
	spare []*Update // the writer's second buffer

	prober Prober // set by Serve under mu when the stream can be probed

	onLive func()       // SubscribeOptions.OnLive
	rt     *replayTrace // the replay's span; nil unless traced and replaying

	unregister sync.Once
}

var serials atomic.Uint64

// replayTrace is a traced replay: its span and what it wrote. Owned like
// from and first: by Subscribe, then by Serve.
type replayTrace struct {
	span     trace.Span
	replayed int
}

// Subscribe registers a subscription. It resolves the resume point first:
// a known id resumes right after it, EarliestID replays all retained
// history, an unknown id resumes live with ResumedFrom reporting EarliestID
// so the client knows updates may have been lost. The subscriber is in the
// index before its replay starts, so nothing published meanwhile is missed,
// and Subscribe reads the replay's first batch itself, so that a resume
// point retention drops meanwhile is reported by ResumedFrom too. The
// caller must call Serve or Close.
func (h *Hub) Subscribe(ctx context.Context, o SubscribeOptions) (*Subscriber, error) {
	if h.draining.Load() {
		return nil, ErrShutdown
	}
	s := &Subscriber{
		h:        h,
		matchers: o.Matchers,
		canRead:  o.CanRead,
		expires:  o.Expires,
		subject:  o.Subject,
		presence: o.Presence,
		serial:   serials.Add(1),
		wake:     make(chan struct{}, 1),
		heapIdx:  -1,
		onLive:   o.OnLive,
	}
	replay, unknown := false, false
	var from, head Position
	if o.Resume {
		if h.cfg.Tracer != nil {
			s.rt = &replayTrace{}
			ctx, s.rt.span = h.cfg.Tracer.Start(ctx, spanReplay, trace.WithAttributes(attrLastEventID.String(o.LastEventID)))
		}
		s.resumed = EarliestID
		if o.LastEventID == EarliestID {
			replay = true
		} else {
			pos, found, err := h.engine.Lookup(ctx, o.LastEventID)
			if err != nil {
				s.endReplaySpan(err)
				return nil, err
			}
			if found {
				replay, from, s.resumed = true, pos, o.LastEventID
			} else {
				// Go live, but not before the head: if retention dropped
				// the id, the client has what came before it.
				head, unknown = pos, true
			}
		}
	}
	s.lastWrite.Store(h.cfg.Now().UnixNano())
	h.idx.mu.Lock()
	if err := h.idx.admit(s, o.Subject); err != nil {
		h.idx.mu.Unlock()
		s.endReplaySpan(err)
		return nil, err
	}
	s.epoch = h.epoch
	if from.Epoch != 0 && from.Epoch != h.epoch {
		// The id was found in a log the hub has left (or not reached
		// yet): it means nothing here.
		replay, from.Seq, s.resumed = false, 0, EarliestID
	}
	if unknown && h.originKnown {
		// This hub saw the log it is in begin, after a lost one: an id
		// it does not know may be from the lost log, and then the client
		// is owed everything the new log holds, not only what comes
		// next.
		replay, from, head = true, Position{Epoch: h.epoch, Seq: h.origin}, Position{}
	}
	s.cursor = h.lastDispatched.Load()
	if head.Epoch == h.epoch {
		s.cursor = max(s.cursor, head.Seq)
	}
	if replay {
		s.state, s.since, s.from = stateReplaying, s.cursor, from.Seq
	} else {
		s.state = stateLive
	}
	h.idx.add(s)
	// In the registry before the index lock goes: a skip or a new epoch
	// that the dispatcher announces right after must reach s too.
	h.subs.add(s)
	h.idx.mu.Unlock()
	if !s.expires.IsZero() {
		h.clock.schedule(s)
	}
	h.m.subscribed(1)
	if h.draining.Load() {
		// EndStreams may have walked the registry before s was in it.
		s.end(ErrShutdown)
	}
	if replay {
		r, err := h.engine.Read(ctx, Position{Epoch: s.epoch, Seq: s.from}, h.cfg.ReplayBatch)
		switch {
		case errors.Is(err, ErrEpoch):
			h.m.lost()
			s.end(ErrLost) // the dispatcher ends it too, once it meets the new epoch
			s.resumed = EarliestID
		case err != nil:
			s.endReplaySpan(err)
			s.Close()
			return nil, err
		case s.lost(r):
			// What followed the resume point was dropped (between the
			// lookup and this read, or long ago for "earliest"): the
			// replay starts after a loss, and the response says so.
			s.resumed = EarliestID
			if len(r.Updates) == 0 {
				// Nothing the history still holds comes before what the
				// dispatcher keeps for the handover: start from there.
				s.mu.Lock()
				s.from = max(s.from, s.since)
				s.mu.Unlock()
			}
		}
		s.first = r.Updates
	}
	if s.rt != nil {
		s.rt.span.SetAttributes(attrResumedFrom.String(s.resumed), attrEarliest.Bool(s.resumed == EarliestID))
		if !replay {
			s.endReplaySpan(nil) // resumed live: nothing to replay
		}
	}
	return s, nil
}

// ResumedFrom is the value of the Mercure-Last-Event-ID response field: the
// id the replay starts after, or EarliestID. It is empty when the client
// asked for no resume.
func (s *Subscriber) ResumedFrom() string { return s.resumed }

// Close unregisters the subscriber. Serve calls it on return; call it
// directly only when Serve is never called. Safe to call more than once.
func (s *Subscriber) Close() {
	s.unregister.Do(func() {
		s.end(context.Canceled)
		h := s.h
		h.idx.mu.Lock()
		h.idx.remove(s)
		h.idx.mu.Unlock()
		h.subs.remove(s)
		h.clock.cancel(s)
		// A replay that Serve never ran (or never finished) ends here.
		s.endReplaySpan(errClosedBeforeLive)
		s.mu.Lock()
		clear(s.queue)
		s.queue, s.queued = nil, 0
		s.mu.Unlock()
		h.m.subscribed(-1)
	})
}

// end records why the subscription ends and wakes the writer. The first
// reason wins.
func (s *Subscriber) end(reason error) {
	s.mu.Lock()
	if s.reason == nil {
		s.reason = reason
		s.state = stateEnded
	}
	s.mu.Unlock()
	s.notify()
}

func (s *Subscriber) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// offer queues u for the writer unless the subscriber has it already, may
// not read it or is over budget. While the subscriber replays, u is kept
// for the handover instead; over budget there, the kept updates are
// dropped, since the replay can read them from the engine. offer never
// blocks and never allocates but to grow the queue's backing array, which
// is reused.
func (s *Subscriber) offer(u *Update) {
	s.mu.Lock()
	if s.state == stateEnded || u.Seq <= s.cursor {
		s.mu.Unlock()
		return
	}
	s.cursor = u.Seq
	if u.Private && (s.canRead == nil || !s.canRead(u.Topics)) {
		s.mu.Unlock()
		return
	}
	n := u.size()
	if s.queued+n > s.h.cfg.QueueBytes {
		if s.state == stateReplaying {
			clear(s.queue)
			s.queue, s.queued, s.since = s.queue[:0], 0, u.Seq
			s.mu.Unlock()
			return
		}
		s.reason, s.state = ErrSlowSubscriber, stateEnded
		s.mu.Unlock()
		s.h.m.slowDisconnect()
		s.notify()
		return
	}
	s.queued += n
	s.queue = append(s.queue, u)
	live := s.state == stateLive
	s.mu.Unlock()
	if live {
		s.notify()
	}
}

// skipped tells the subscriber that the dispatcher passed over the updates
// up to Seq to, which it could not read: a live subscriber may have wanted
// one and ends with reason; a replaying one must read them itself, so what
// it kept for the handover restarts after them. Call with the hub's index
// locked.
func (s *Subscriber) skipped(to uint64, reason error) {
	s.mu.Lock()
	switch s.state {
	case stateLive:
		s.mu.Unlock()
		s.h.m.lost()
		s.end(reason)
		return
	case stateReplaying:
		clear(s.queue)
		s.queue, s.queued = s.queue[:0], 0
		s.since = max(s.since, to)
		s.cursor = max(s.cursor, to)
	}
	s.mu.Unlock()
}

// lost reports whether r, read from the history, misses updates this
// subscriber may want.
func (s *Subscriber) lost(r Range) bool {
	return r.Gap || r.PresenceGap && s.presence
}

// wants reports whether a replayed update is for this subscriber.
func (s *Subscriber) wants(u *Update) bool {
	routed := false
	for _, m := range s.matchers {
		if m.MatchAny(u.Topics) {
			routed = true
			break
		}
	}
	if !routed {
		return false
	}
	return !u.Private || (s.canRead != nil && s.canRead(u.Topics))
}

// QueuedBytes returns the bytes waiting in the subscriber's queue.
func (s *Subscriber) QueuedBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

// Serve writes the subscription to w until ctx ends, the token expires,
// the subscriber falls over its budget or the hub shuts down, and returns
// why. It first replays history from the resume point, then switches to
// live updates with no gap and no duplicate. Every write carries the hub's
// write deadline, so a dead peer cannot hold the goroutine.
func (s *Subscriber) Serve(ctx context.Context, w Stream) error {
	defer s.Close()
	if p, ok := w.(Prober); ok {
		s.mu.Lock()
		s.prober = p
		s.mu.Unlock()
	}
	if err := s.replay(ctx, w); err != nil {
		return err
	}
	if s.onLive != nil {
		s.mu.Lock()
		live := s.state == stateLive
		s.mu.Unlock()
		if live {
			s.onLive()
		}
	}
	var delay *time.Timer // for WriteDelay; made on first use
	defer func() {
		if delay != nil {
			delay.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-s.wake:
		}
		if d := s.h.pace.delay(); d > 0 {
			// Capped at d: lastWrite is wall-clock time, which can step back.
			// An end of the subscription (slow, expired, shutdown) is noticed
			// when the wait is over, at most d later.
			if wait := min(time.Duration(s.lastWrite.Load()+int64(d))-time.Duration(s.h.cfg.Now().UnixNano()), d); wait > 0 {
				if delay == nil {
					delay = time.NewTimer(wait)
				} else {
					delay.Reset(wait)
				}
				select {
				case <-ctx.Done():
					return context.Cause(ctx)
				case <-delay.C:
				}
			}
		}
		s.mu.Lock()
		q := s.queue
		s.queue, s.spare = s.spare[:0], nil
		s.queued = 0
		hb := s.hbDue
		s.hbDue = false
		reason := s.reason
		s.mu.Unlock()

		if len(q) > 0 || (hb && reason == nil) {
			if err := s.write(w, q, hb); err != nil {
				return err
			}
		}
		clear(q)
		s.spare = q
		if reason != nil {
			return reason
		}
	}
}

// write sends a batch of frames with one flush.
func (s *Subscriber) write(w Stream, q []*Update, heartbeat bool) error {
	cfg := &s.h.cfg
	now := cfg.Now()
	if err := w.SetWriteDeadline(now.Add(cfg.WriteTimeout)); err != nil && !errors.Is(err, errNotSupported) {
		return err
	}
	for _, u := range q {
		if _, err := w.Write(u.Frame); err != nil {
			return err
		}
	}
	if len(q) == 0 && heartbeat {
		if _, err := w.Write(heartbeatFrame); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	// Lift the deadline: it bounds this batch only. Left armed, it would
	// fire on an idle stream (HTTP/2 resets the stream when a write
	// deadline passes, even with nothing being written).
	if err := w.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, errNotSupported) {
		return err
	}
	// The batch's start is close enough for the heartbeat's idea of the
	// last write, and saves reading the clock twice per delivery.
	s.lastWrite.Store(now.UnixNano())
	s.h.m.delivered(len(q))
	return nil
}

// errNotSupported matches http.ErrNotSupported without importing net/http.
var errNotSupported = errors.ErrUnsupported

// replay sends history after the resume point, then hands over to live
// updates. While it runs, the dispatcher keeps in the queue every update
// for this subscriber after the Seq since (or restarts that after an
// overflow). Once the replay has read past since, the queue holds all the
// rest: the replay switches to live under the subscriber's lock, dropping
// from the queue what it wrote itself. Every update is either read here or
// queued, never both and never neither; and a range that retention
// dropped before the replay read it (Range.Gap) ends the subscription with
// ErrLost instead of being skipped.
func (s *Subscriber) replay(ctx context.Context, w Stream) error {
	if s.rt == nil {
		return s.replayLoop(ctx, w)
	}
	s.mu.Lock()
	ended := s.reason // before Serve: a lost log, a shutdown
	s.mu.Unlock()
	err := s.replayLoop(ctx, w)
	if err == nil && ended != nil {
		s.endReplaySpan(ended)
	} else {
		s.endReplaySpan(err)
	}
	return err
}

// replayLoop is replay without its span.
func (s *Subscriber) replayLoop(ctx context.Context, w Stream) error {
	s.mu.Lock()
	replaying := s.state == stateReplaying
	s.mu.Unlock()
	if !replaying {
		return nil
	}
	h := s.h
	batch := s.first
	s.first = nil
	for {
		q := batch[:0]
		for _, u := range batch {
			if s.wants(u) {
				q = append(q, u)
			}
		}
		if len(batch) > 0 {
			s.from = batch[len(batch)-1].Seq
		}
		if len(q) > 0 {
			if err := s.write(w, q, false); err != nil {
				return err
			}
			if s.rt != nil {
				s.rt.replayed += len(q)
			}
		}
		s.mu.Lock()
		if s.reason != nil {
			reason := s.reason
			s.mu.Unlock()
			return reason
		}
		if s.from >= s.since {
			// Everything after since that is for us is in the queue.
			i := 0
			for i < len(s.queue) && s.queue[i].Seq <= s.from {
				s.queued -= s.queue[i].size()
				i++
			}
			if i > 0 {
				n := copy(s.queue, s.queue[i:])
				clear(s.queue[n:])
				s.queue = s.queue[:n]
			}
			s.cursor = max(s.cursor, s.from)
			s.state = stateLive
			pending := len(s.queue) > 0
			if s.rt != nil {
				s.rt.span.SetAttributes(attrHandedOver.Int(len(s.queue)))
			}
			s.mu.Unlock()
			if pending {
				s.notify()
			}
			return nil
		}
		s.mu.Unlock()
		if err := context.Cause(ctx); err != nil {
			return err
		}
		r, err := h.engine.Read(ctx, Position{Epoch: s.epoch, Seq: s.from}, h.cfg.ReplayBatch)
		switch {
		case errors.Is(err, ErrEpoch):
			return ErrLost
		case err != nil:
			return err
		case s.lost(r):
			h.m.lost()
			return ErrLost
		case len(r.Updates) == 0:
			// Nothing after from, yet the dispatcher went past it: the
			// engine should have said Gap. Ending beats spinning.
			h.log.Error("history read returned nothing short of the dispatched position", "from", s.from, "since", s.since, "head", r.Head)
			h.m.lost()
			return ErrLost
		}
		batch = r.Updates
	}
}

// registry holds every subscriber in slots, so the clock can visit one slot
// per tick and spread heartbeats over the interval.
type registry struct {
	slots [registrySlots]struct {
		mu   sync.Mutex
		subs map[*Subscriber]struct{}
	}
	n atomic.Int64
}

const registrySlots = 16

func (r *registry) init() {
	for i := range r.slots {
		r.slots[i].subs = make(map[*Subscriber]struct{})
	}
}

func (r *registry) add(s *Subscriber) {
	sl := &r.slots[s.serial%registrySlots]
	sl.mu.Lock()
	sl.subs[s] = struct{}{}
	sl.mu.Unlock()
	r.n.Add(1)
}

func (r *registry) remove(s *Subscriber) {
	sl := &r.slots[s.serial%registrySlots]
	sl.mu.Lock()
	if _, ok := sl.subs[s]; ok {
		delete(sl.subs, s)
		r.n.Add(-1)
		if len(sl.subs) == 0 {
			// Go maps never shrink: drop the storage a crowd grew.
			sl.subs = make(map[*Subscriber]struct{})
		}
	}
	sl.mu.Unlock()
}

func (r *registry) len() int { return int(r.n.Load()) }

// eachInSlot calls fn for the subscribers of one slot. fn must not block.
func (r *registry) eachInSlot(i int, fn func(*Subscriber)) {
	sl := &r.slots[i]
	sl.mu.Lock()
	for s := range sl.subs {
		fn(s)
	}
	sl.mu.Unlock()
}

func (r *registry) each(fn func(*Subscriber)) {
	for i := range r.slots {
		r.eachInSlot(i, fn)
	}
}
