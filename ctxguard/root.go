package ctxguard

import (
	"context"
	"net/http"
	"reflect"
	"runtime"
	"sync"
	"time"
)

// siteDepth is how many callers of Go are kept: the call site itself and
// a few above it, so that a report still shows the handler when the call
// is made by a helper. Capturing them costs about as much as starting the
// goroutine; resolving them to names and lines happens only in a report.
const siteDepth = 4

// rootKey finds a request's root in its context.
type rootKey struct{}

// root is one guarded request: the context its handler runs under and the
// tracked goroutines started under it. It is itself that context (its
// Value answers rootKey and defers the rest to the cancel context it
// embeds), which saves the middleware a context.WithValue per request;
// contexts derived from it still find the embedded cancelCtx, so they
// are cancelled without a goroutine of the context package.
type root struct {
	context.Context
	cancel context.CancelCauseFunc
	g      *Guard

	mu      sync.Mutex
	req     *http.Request // for naming the root; dropped once named
	s       *series       // nil until the first Go
	started int           // tracked goroutines ever started
	running int           // tracked goroutines not yet exited
	seq     uint64        // sequence number of the last one started
	first   *goroutine    // the running ones, newest first
	ended   bool
	endedAt time.Time
	timed   bool // the cancel latency has been observed

	// The watch's fields, guarded by the watch's lock: the root is queued
	// while it is ended and has goroutines not yet reported.
	queued     bool
	due        time.Time
	dueSeq     uint64 // goroutines up to this one are late at due
	prev, next *root
}

// goroutine is one tracked goroutine while it runs.
type goroutine struct {
	pcs        [siteDepth]uintptr
	fn         uintptr // the entry of the function it runs
	seq        uint64
	reported   bool
	prev, next *goroutine
}

func (g *Guard) newRoot(parent context.Context) *root {
	ctx, cancel := context.WithCancelCause(parent)
	return &root{Context: ctx, cancel: cancel, g: g}
}

func (rt *root) Value(key any) any {
	if key == (rootKey{}) {
		return rt
	}
	return rt.Context.Value(key)
}

// Go runs fn(ctx) on a new goroutine. When ctx descends from a request
// guarded by a Guard's middleware, the goroutine is tracked under that
// request: counted while it runs, waited for by Guard.Wait, and reported
// if it is still running Options.LateAfter after the request ended,
// with the place Go was called from. Outside a guarded request fn still
// runs on its own goroutine, uncounted and unwatched: no guard knows of it.
//
// fn must return once ctx is done; ctx is the one given, so values and
// deadlines added to it on the way are kept.
func Go(ctx context.Context, fn func(context.Context)) {
	rt, _ := ctx.Value(rootKey{}).(*root)
	if rt == nil {
		go fn(ctx)
		return
	}
	gr := &goroutine{fn: reflect.ValueOf(fn).Pointer()}
	runtime.Callers(2, gr.pcs[:])
	s := rt.add(gr)
	s.running.Inc()
	rt.g.live.Add(1)
	go func() {
		defer rt.exit(gr)
		fn(ctx)
	}()
}

// add counts gr under rt and returns the root's series. The unlock is
// deferred because naming the root runs the caller's Root func, which may
// panic: the handler's own end must still find rt.mu free.
func (rt *root) add(gr *goroutine) *series {
	g := rt.g
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.s == nil {
		rt.s = g.m.series(g.rootName(rt.req))
		rt.req = nil
	}
	rt.started++
	rt.running++
	rt.seq++
	gr.seq = rt.seq
	gr.next = rt.first
	if rt.first != nil {
		rt.first.prev = gr
	}
	rt.first = gr
	if rt.ended {
		// Started after its request ended: it gets its own grace.
		g.w.enqueue(rt)
	}
	return rt.s
}

func (rt *root) exit(gr *goroutine) {
	g := rt.g
	rt.mu.Lock()
	if gr.prev != nil {
		gr.prev.next = gr.next
	} else {
		rt.first = gr.next
	}
	if gr.next != nil {
		gr.next.prev = gr.prev
	}
	rt.running--
	s := rt.s
	if rt.running == 0 && rt.ended {
		rt.lastExit()
		g.w.dequeue(rt)
	}
	rt.mu.Unlock()
	s.running.Dec()
	if g.live.Add(-1) == 0 {
		g.wakeIdle()
	}
}

// end cancels the root's context with cause and, when the root has
// goroutines still running, has the watch look after them. The time is
// taken even for a root without goroutines: one may be started on its
// context later, and its report must say how long the request has been
// over.
func (rt *root) end(cause error) {
	rt.cancel(cause)
	now := time.Now()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.ended = true
	rt.endedAt = now
	if rt.started == 0 {
		return
	}
	if rt.running == 0 {
		rt.lastExit()
		return
	}
	rt.g.w.enqueue(rt)
}

// lastExit observes the cancel latency, once per root: a goroutine
// started after the last one exited does not restart the clock. rt.mu is
// held.
func (rt *root) lastExit() {
	if rt.timed {
		return
	}
	rt.timed = true
	rt.s.latency.Observe(time.Since(rt.endedAt).Seconds())
}
