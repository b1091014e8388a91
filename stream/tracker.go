package stream

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Tracker counts event streams from the arrival of their request to the
// close of their connection, so that a shutdown can refuse new streams,
// end and wait for those under way, and close what outlives its grace
// period. http.Server.Shutdown cannot do this alone: it forgets a
// connection once it is taken over (Conn), and it waits for handlers
// without ending them, while an event stream never ends by itself.
//
// A request is counted by Enter before it does anything that Shutdown
// must wait for or end (subscribing to the hub, taking the connection),
// so a shutdown that starts at any point of its life either refuses it or
// waits for it.
//
// The zero Tracker is ready to use. It must not be copied after first use.
type Tracker struct {
	mu      sync.Mutex
	closing bool // the gate is closed: Enter refuses
	forced  bool // the grace period is over: streams are closed at once
	n       int  // tickets not released
	own     int  // the tracker's own goroutines (the hang-up watcher)
	drained chan struct{}
	isDone  bool // drained is closed
	open    map[*Ticket]struct{}

	hangups hangups // reports clients that left taken-over connections
}

// Ticket is one counted stream request. The goroutine that got it from
// Enter owns it and must either call Done or hand it to Go.
type Ticket struct {
	t      *Tracker
	s      tracked // its stream, once it has one
	handed bool    // Go owns the ticket now
	done   bool
}

// tracked is a stream the tracker can bound and close at shutdown.
type tracked interface {
	// cut bounds every write from now on, the one in flight included, by
	// t. It may be called from any goroutine, concurrently with the
	// stream's writer.
	cut(t time.Time)
	// abort closes what the tracker must close itself once the grace
	// period is over. It may be called from any goroutine.
	abort()
	// end ends the tracking; it is called by the stream's owner when the
	// ticket is released.
	end()
}

// Enter counts a new stream request. It returns false, and no ticket,
// once Shutdown has begun: the caller should then tell the client to come
// back later (an event stream that ends at once with a retry hint, since
// EventSource gives up for good on an error status).
func (t *Tracker) Enter() (*Ticket, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return nil, false
	}
	t.n++
	return &Ticket{t: t}, true
}

// Done releases the ticket, closing its connection if it took one. It
// does nothing after Go or on a nil ticket, so `defer k.Done()` right
// after Enter covers every early return.
func (k *Ticket) Done() {
	if k == nil || k.handed || k.done {
		return
	}
	k.done = true
	k.t.release(k)
}

// Go runs fn on a new goroutine that owns the ticket from now on: when fn
// returns, the ticket is released and its connection, if any, closed. It
// lets a stream outlive its handler, counted all along. Call it at most
// once, from the ticket's owner.
func (k *Ticket) Go(fn func()) {
	k.handed = true
	go func() {
		defer k.t.release(k)
		fn()
	}()
}

// Response returns w as a stream that stays inside net/http (HTTP/2, or
// HTTP/1.1 when the connection is not taken over), tracked by k so that a
// shutdown can bound its writes. The caller has written the response
// head.
func (k *Ticket) Response(w http.ResponseWriter) *Response {
	r := &Response{w: w, rc: http.NewResponseController(w)}
	k.t.register(k, r)
	return r
}

// register attaches the ticket's stream. One that arrives while shutdown
// is under way is bounded (or closed) at once, as the ones already there
// were.
func (t *Tracker) register(k *Ticket, s tracked) {
	k.s = s
	t.mu.Lock()
	if t.open == nil {
		t.open = make(map[*Ticket]struct{})
	}
	t.open[k] = struct{}{}
	closing, forced := t.closing, t.forced
	t.mu.Unlock()
	switch {
	case forced:
		s.abort()
	case closing:
		s.cut(time.Now().Add(CloseTimeout))
	}
}

func (t *Tracker) release(k *Ticket) {
	if k.s != nil {
		k.s.end()
	}
	t.mu.Lock()
	delete(t.open, k)
	t.leaveLocked()
	t.mu.Unlock()
}

// hold counts a goroutine the tracker owns besides the streams (the
// hang-up watcher); letGo releases it. hold is only called while a ticket
// is held, so the count is never zero then.
func (t *Tracker) hold() {
	t.mu.Lock()
	t.own++
	t.mu.Unlock()
}

func (t *Tracker) letGo() {
	t.mu.Lock()
	t.own--
	t.drainedLocked()
	t.mu.Unlock()
}

func (t *Tracker) leaveLocked() {
	t.n--
	t.drainedLocked()
}

// drainedLocked closes drained once the gate is closed and nothing is
// left.
func (t *Tracker) drainedLocked() {
	if t.drained == nil {
		t.drained = make(chan struct{})
	}
	if t.closing && t.n == 0 && t.own == 0 && !t.isDone {
		t.isDone = true
		close(t.drained)
	}
}

func (t *Tracker) streams() []tracked {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]tracked, 0, len(t.open))
	for k := range t.open {
		out = append(out, k.s)
	}
	return out
}

// Shutdown closes the gate, so Enter refuses from now on, calls end (which
// should end every stream, such as hub.Hub.EndStreams), bounds the writes
// of every stream by CloseTimeout, so a client that stopped reading cannot
// hold the shutdown, and waits until every ticket is released. When ctx
// ends first, it closes the connections of the taken-over streams still
// open and returns ctx's cause; the streams left inside net/http end when
// the http.Server closes. Call Wait then to see everything finish.
// Shutdown may be called more than once.
func (t *Tracker) Shutdown(ctx context.Context, end func()) error {
	t.mu.Lock()
	t.closing = true
	t.drainedLocked()
	drained := t.drained
	t.mu.Unlock()
	if end != nil {
		end()
	}
	by := time.Now().Add(CloseTimeout)
	for _, s := range t.streams() {
		s.cut(by)
	}
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	t.forced = true
	t.mu.Unlock()
	for _, s := range t.streams() {
		s.abort()
	}
	return context.Cause(ctx)
}

// Wait blocks until Shutdown has begun and every ticket has been
// released, and the tracker's own goroutine has ended.
func (t *Tracker) Wait() {
	t.mu.Lock()
	t.drainedLocked()
	drained := t.drained
	t.mu.Unlock()
	<-drained
}

// Len returns the number of stream requests counted and not yet released.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}
