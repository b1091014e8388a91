// Package ctxguard roots every goroutine a request starts in that request,
// for any net/http service. Its middleware cancels the request's context
// as soon as the handler returns or panics, with a cause that says which;
// Go starts goroutines counted under the request; and a goroutine still
// running a while after its request ended is reported once, with the place
// that started it. Metrics (goroutines per route, the time from a
// request's cancel to the exit of its last goroutine, late goroutines)
// register on an injected prometheus.Registerer, and Wait is the gate a
// graceful shutdown waits on.
package ctxguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrHandlerReturned is the cause of a guarded request's cancellation when
// its handler returned (or left through runtime.Goexit).
var ErrHandlerReturned = errors.New("ctxguard: handler returned")

// PanicError is the cause of a guarded request's cancellation when its
// handler panicked. The middleware panics again with the same value after
// cancelling, so net/http's own recovery still logs the panic (with the
// original stack, which is still on the goroutine when the panic resumes)
// and http.ErrAbortHandler still aborts quietly.
type PanicError struct {
	Value any // the value the handler panicked with
}

func (e *PanicError) Error() string { return fmt.Sprintf("ctxguard: handler panicked: %v", e.Value) }

// Unwrap returns the panic value when it is an error, so that
// errors.Is(cause, http.ErrAbortHandler) holds for an aborted handler.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Defaults for the zero Options.
const (
	DefaultLateAfter = 5 * time.Second
	DefaultMaxRoots  = 64
)

// Label values with a fixed meaning.
const (
	// OtherRoot labels the goroutines of every root name beyond
	// Options.MaxRoots.
	OtherRoot = "other"
	// UnknownRoot labels the goroutines of a request whose root name is
	// empty (with the default Root, a request no ServeMux routed).
	UnknownRoot = "unknown"
)

// Options configure a Guard. The zero value is usable: no metrics
// registered, reports discarded, roots named by their ServeMux pattern.
type Options struct {
	// Registerer takes the guard's collectors; nil leaves them
	// unregistered. Two guards on one registry need distinct names: wrap
	// it with prometheus.WrapRegistererWithPrefix or WrapRegistererWith.
	Registerer prometheus.Registerer

	// Logger receives one warning per late goroutine; nil discards them
	// (the late counter still counts).
	Logger *slog.Logger

	// Root names a request's root, the label its goroutines are counted
	// under, typically its route pattern. It is called once per request,
	// and only for requests that start a tracked goroutine, at the first
	// Go call, on the goroutine that makes it: by then a router inside the
	// middleware has routed the request, which it had not when the
	// middleware was entered. It gets the request as the middleware passed
	// it on, and must not modify it. Nil means Request.Pattern, which a
	// ServeMux sets on that very request when the guard wraps it directly
	// (or when the guard wraps a handler the mux routes to); see
	// MuxPattern for a mux further in.
	Root func(*http.Request) string

	// MaxRoots bounds the distinct root labels; the goroutines of later
	// names are counted under OtherRoot. Zero means DefaultMaxRoots.
	MaxRoots int

	// LateAfter is how long a tracked goroutine may run after its root
	// ended before it is reported as late. Zero means DefaultLateAfter; a
	// negative value turns reports off.
	LateAfter time.Duration
}

// Guard is the middleware and the bookkeeping of the goroutines it
// tracks. Create it with New; it is safe for concurrent use. Close ends
// the late-goroutine watch, Wait is the shutdown gate.
type Guard struct {
	rootName  func(*http.Request) string
	log       *slog.Logger
	lateAfter time.Duration
	m         metrics

	// live counts tracked goroutines still running, under every root;
	// idle is closed when it falls to zero while somebody waits.
	live   atomic.Int64
	idleMu sync.Mutex
	idle   chan struct{}

	w watch
}

// New returns a guard configured by opts. It panics if the collectors
// cannot be registered (a name already taken on the registry), as
// prometheus.MustRegister does.
func New(opts Options) *Guard {
	g := &Guard{
		rootName:  opts.Root,
		log:       opts.Logger,
		lateAfter: opts.LateAfter,
	}
	if g.rootName == nil {
		g.rootName = requestPattern
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.lateAfter == 0 {
		g.lateAfter = DefaultLateAfter
	}
	maxRoots := opts.MaxRoots
	if maxRoots <= 0 {
		maxRoots = DefaultMaxRoots
	}
	g.m.init(opts.Registerer, maxRoots)
	g.w.g = g
	return g
}

func requestPattern(r *http.Request) string { return r.Pattern }

// MuxPattern returns an Options.Root that names a request by the pattern
// of mux that serves it, for a mux that the request reaches through
// middleware that replaces the request (r.WithContext), so that the
// pattern the mux sets is not visible on the guard's request. It looks
// the route up again, once per request that starts a tracked goroutine.
// A request the mux does not route gets UnknownRoot.
func MuxPattern(mux *http.ServeMux) func(*http.Request) string {
	return func(r *http.Request) string {
		_, pattern := mux.Handler(r)
		return pattern
	}
}

// Handler returns next wrapped in the guard: each request runs under a
// context derived from its own with context.WithCancelCause, cancelled
// with ErrHandlerReturned when next returns and with a *PanicError when it
// panics, after which the panic resumes with its original value.
// net/http cancels a request's context too once its handler is done, but
// without a cause, and only after every middleware outside this one has
// finished. The ResponseWriter is passed through untouched, so Flusher,
// Hijacker and http.NewResponseController keep working.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := g.newRoot(r.Context())
		r = r.WithContext(rt)
		rt.req = r
		defer func() {
			// recover returns nil on runtime.Goexit, which goes on
			// unwinding by itself; a panic with a nil value arrives
			// as a *runtime.PanicNilError.
			if v := recover(); v != nil {
				rt.end(&PanicError{Value: v})
				panic(v)
			}
			rt.end(ErrHandlerReturned)
		}()
		next.ServeHTTP(w, r)
	})
}

// Wait blocks until no tracked goroutine is running, and returns nil, or
// the cause of ctx when it ends first. It is the gate of a graceful
// shutdown: once http.Server.Shutdown has returned, every guarded request
// has been cancelled, and Wait sees its goroutines out. Goroutines started
// while it waits are waited for too.
func (g *Guard) Wait(ctx context.Context) error {
	for {
		g.idleMu.Lock()
		if g.live.Load() == 0 {
			g.idleMu.Unlock()
			return nil
		}
		if g.idle == nil {
			g.idle = make(chan struct{})
		}
		idle := g.idle
		g.idleMu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// wakeIdle releases the waiters after live fell to zero. They check live
// again, since a goroutine may have started in between.
func (g *Guard) wakeIdle() {
	g.idleMu.Lock()
	if g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
	g.idleMu.Unlock()
}

// Running returns the number of tracked goroutines running, under every
// root.
func (g *Guard) Running() int { return int(g.live.Load()) }

// Close ends the late-goroutine watch: its timer is stopped, a report
// under way is waited for, and nothing is reported from then on. The
// middleware and Go keep working and keep counting. Close may be called
// more than once.
func (g *Guard) Close() { g.w.close() }
