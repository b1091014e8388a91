package ctxguard_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/ctxguard"
)

func TestCancelledWhenHandlerReturns(t *testing.T) {
	g := ctxguard.New(ctxguard.Options{})
	defer g.Close()
	var ctx context.Context
	var errDuring error
	serve(g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx = r.Context()
		errDuring = ctx.Err()
	})), "GET", "/")
	if errDuring != nil {
		t.Errorf("context done while the handler ran: %v", errDuring)
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err = %v, want context.Canceled", ctx.Err())
	}
	if cause := context.Cause(ctx); cause != ctxguard.ErrHandlerReturned {
		t.Errorf("cause %v, want ErrHandlerReturned", cause)
	}
}

func TestCancelledWhenHandlerPanics(t *testing.T) {
	for _, value := range []any{"boom", http.ErrAbortHandler, fmt.Errorf("wrapped: %w", http.ErrAbortHandler)} {
		t.Run(fmt.Sprint(value), func(t *testing.T) {
			g := ctxguard.New(ctxguard.Options{})
			defer g.Close()
			var ctx context.Context
			h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx = r.Context()
				panic(value)
			}))
			var got any
			func() {
				defer func() { got = recover() }()
				serve(h, "GET", "/")
			}()
			if got != value {
				t.Errorf("re-panicked with %v, want the handler's value %v", got, value)
			}
			cause := context.Cause(ctx)
			var pe *ctxguard.PanicError
			if !errors.As(cause, &pe) || pe.Value != value {
				t.Fatalf("cause %v, want a *PanicError carrying %v", cause, value)
			}
			if err, ok := value.(error); ok && !errors.Is(cause, http.ErrAbortHandler) {
				t.Errorf("errors.Is(cause, ErrAbortHandler) is false for %v", err)
			}
		})
	}
}

func TestCancelledWhenHandlerGoexits(t *testing.T) {
	g := ctxguard.New(ctxguard.Options{})
	defer g.Close()
	var ctx context.Context
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx = r.Context()
			runtime.Goexit()
		})), "GET", "/")
	}()
	<-done
	if cause := context.Cause(ctx); cause != ctxguard.ErrHandlerReturned {
		t.Errorf("cause %v, want ErrHandlerReturned", cause)
	}
}

// The request's context keeps its values and its parent's cancellation,
// and contexts derived from it are cancelled with it.
func TestRequestContextKeepsParentAndChildren(t *testing.T) {
	g := ctxguard.New(ctxguard.Options{})
	defer g.Close()
	type key struct{}
	var child context.Context
	var cancelChild context.CancelFunc
	var value any
	h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		value = r.Context().Value(key{})
		child, cancelChild = context.WithCancel(r.Context())
	}))
	parent, cancelParent := context.WithCancel(context.WithValue(t.Context(), key{}, "v"))
	defer cancelParent()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(parent, "GET", "/", nil))
	defer cancelChild()
	if value != "v" {
		t.Errorf("value %v, want the parent's", value)
	}
	if cause := context.Cause(child); cause != ctxguard.ErrHandlerReturned {
		t.Errorf("derived context's cause %v, want ErrHandlerReturned", cause)
	}

	// Derived contexts find the request's cancel context, so the context
	// package needs no goroutine per child to propagate the cancel.
	var before, during int
	h3 := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		before = runtime.NumGoroutine()
		for range 100 {
			_, cancel := context.WithCancel(r.Context())
			defer cancel()
		}
		during = runtime.NumGoroutine()
	}))
	h3.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(parent, "GET", "/", nil))
	if during-before >= 100 {
		t.Errorf("%d goroutines for 100 derived contexts", during-before)
	}

	// The parent's cancellation reaches the handler.
	errParent := errors.New("client gone")
	parent2, cancel2 := context.WithCancelCause(t.Context())
	seen := make(chan error, 1)
	h2 := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel2(errParent)
		<-r.Context().Done()
		seen <- context.Cause(r.Context())
	}))
	h2.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(parent2, "GET", "/", nil))
	if err := <-seen; err != errParent {
		t.Errorf("cause in handler %v, want the parent's", err)
	}
}

func TestGoOutsideGuardedRequest(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := ctxguard.New(ctxguard.Options{Registerer: reg})
	defer g.Close()
	type key struct{}
	ctx := context.WithValue(t.Context(), key{}, "v")
	got := make(chan any, 1)
	ctxguard.Go(ctx, func(ctx context.Context) { got <- ctx.Value(key{}) })
	if v := <-got; v != "v" {
		t.Errorf("fn got value %v, want the caller's context", v)
	}
	if g.Running() != 0 {
		t.Errorf("an unrooted goroutine was counted")
	}
	for root, v := range gauges(t, reg) {
		if root != ctxguard.OtherRoot || v != 0 {
			t.Errorf("gauge %s=%v for an unrooted goroutine", root, v)
		}
	}
}

func TestGaugePerRoot(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := ctxguard.New(ctxguard.Options{Registerer: reg})
	defer g.Close()
	release := make(chan struct{})
	block := func(context.Context) { <-release }
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctxguard.Go(r.Context(), block)
		ctxguard.Go(r.Context(), func(ctx context.Context) {
			ctxguard.Go(ctx, block) // nested, same root
			block(ctx)
		})
	})
	mux.HandleFunc("POST /items", func(w http.ResponseWriter, r *http.Request) {
		ctxguard.Go(r.Context(), block)
	})
	h := g.Handler(mux) // wraps the mux: the pattern it sets is seen
	serve(h, "GET", "/items/1")
	serve(h, "GET", "/items/2")
	serve(h, "POST", "/items")
	serve(h, "GET", "/nowhere") // 404, no goroutine, no label
	waitFor(t, "goroutines started", func() bool { return g.Running() == 7 })
	got := gauges(t, reg)
	want := map[string]float64{"GET /items/{id}": 6, "POST /items": 1, ctxguard.OtherRoot: 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("gauges %v, want %v", got, want)
	}
	close(release)
	if err := g.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	for root, v := range gauges(t, reg) {
		if v != 0 {
			t.Errorf("gauge %s=%v after every goroutine exited", root, v)
		}
	}
}

func TestRootLabelsCapped(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := ctxguard.New(ctxguard.Options{
		Registerer: reg, MaxRoots: 3,
		Root: func(r *http.Request) string { return r.URL.Path },
	})
	defer g.Close()
	release := make(chan struct{})
	h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctxguard.Go(r.Context(), func(context.Context) { <-release })
		ctxguard.Go(r.Context(), func(context.Context) { <-release })
	}))
	for i := range 100 {
		serve(h, "GET", fmt.Sprintf("/p%d", i%50))
	}
	waitFor(t, "goroutines started", func() bool { return g.Running() == 200 })
	got := gauges(t, reg)
	want := map[string]float64{"/p0": 4, "/p1": 4, "/p2": 4, ctxguard.OtherRoot: 188}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("gauges %v, want %v", got, want)
	}
	close(release)
	if err := g.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(byRoot(t, reg, "ctxguard_cancel_latency_seconds")); n != 4 {
		t.Errorf("%d latency series, want 4 (3 names and %q)", n, ctxguard.OtherRoot)
	}
	for root, v := range gauges(t, reg) {
		if v != 0 {
			t.Errorf("gauge %s=%v after every goroutine exited", root, v)
		}
	}
}

// Middleware between the guard and the mux replaces the request, so the
// pattern the mux sets is not on the guard's request: MuxPattern finds it.
func TestMuxPattern(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctxguard.Go(r.Context(), func(context.Context) {})
	})
	type key struct{}
	between := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, 1)))
	})
	for _, tc := range []struct {
		name string
		root func(*http.Request) string
		want string
	}{
		{"default", nil, ctxguard.UnknownRoot},
		{"MuxPattern", ctxguard.MuxPattern(mux), "GET /items/{id}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			g := ctxguard.New(ctxguard.Options{Registerer: reg, Root: tc.root})
			defer g.Close()
			serve(g.Handler(between), "GET", "/items/7")
			if err := g.Wait(t.Context()); err != nil {
				t.Fatal(err)
			}
			if _, ok := gauges(t, reg)[tc.want]; !ok {
				t.Errorf("labels %v, want %q among them", gauges(t, reg), tc.want)
			}
		})
	}
}

func TestTwoGuardsOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := ctxguard.New(ctxguard.Options{Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"guard": "a"}, reg)})
	b := ctxguard.New(ctxguard.Options{Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"guard": "b"}, reg)})
	a.Close()
	b.Close()
	if f := family(t, reg, "ctxguard_goroutines"); f == nil || len(f.GetMetric()) != 2 {
		t.Errorf("want one gauge per guard, got %v", f)
	}
}

// A Root func that panics fails the Go call, and so the handler, like any
// panic in it: the request still ends and is cancelled.
func TestRootFuncPanics(t *testing.T) {
	g := ctxguard.New(ctxguard.Options{Root: func(*http.Request) string { panic("bad root") }})
	defer g.Close()
	var ctx context.Context
	h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx = r.Context()
		ctxguard.Go(r.Context(), func(context.Context) { t.Error("started despite the failed Go") })
	}))
	got := make(chan any, 1)
	go func() {
		defer func() { got <- recover() }()
		serve(h, "GET", "/")
	}()
	select {
	case v := <-got:
		if v != "bad root" {
			t.Fatalf("panic %v, want the Root func's", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request never ended: the root's lock is held")
	}
	var pe *ctxguard.PanicError
	if cause := context.Cause(ctx); !errors.As(cause, &pe) {
		t.Errorf("cause %v, want a *PanicError", cause)
	}
	if g.Running() != 0 {
		t.Errorf("%d running after a failed Go", g.Running())
	}
}
