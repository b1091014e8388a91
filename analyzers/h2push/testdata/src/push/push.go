// Package push holds handlers and middleware that use, or only look like
// they use, HTTP/2 server push.
package push

import (
	"log"
	"net/http"
	"strings"
)

// ---- Reported ----

// The classic asset push in a page handler.
func page(w http.ResponseWriter, r *http.Request) {
	if p, ok := w.(http.Pusher); ok {
		_ = p.Push("/app.js", nil) // want `replace Push with a Link rel=preload header`
	}
	w.Write([]byte("<html>"))
}

// Push with options.
func withOptions(w http.ResponseWriter, r *http.Request) {
	p, ok := w.(http.Pusher)
	if !ok {
		return
	}
	opts := &http.PushOptions{Header: http.Header{"Accept-Encoding": r.Header["Accept-Encoding"]}} // want `HTTP/2 server push options`
	if err := p.Push("/style.css", opts); err != nil {                                             // want `replace Push`
		log.Printf("push: %v", err)
	}
}

// Several assets in a loop.
func assets(w http.ResponseWriter, files []string) {
	p, _ := w.(http.Pusher)
	for _, f := range files {
		p.Push(f, nil) // want `replace Push`
	}
}

// A helper that takes a Pusher.
func pushAll(p http.Pusher, targets ...string) {
	for _, t := range targets {
		_ = p.Push(t, &http.PushOptions{Method: "GET"}) // want `replace Push`
	}
}

// Middleware that pushes for every HTML page.
func pushMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".html") {
			if p, ok := w.(http.Pusher); ok {
				p.Push("/common.js", nil) // want `replace Push`
			}
		}
		next.ServeHTTP(w, r)
	})
}

// A value of PushOptions kept in a variable.
var defaultPush = http.PushOptions{Method: "GET"} // want `HTTP/2 server push options`

// Push inside a goroutine started from a handler.
func background(w http.ResponseWriter) {
	if p, ok := w.(http.Pusher); ok {
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.Push("/late.js", &defaultPush) // want `replace Push`
		}()
		<-done
	}
}

// A wrapper's Push that pushes something of its own is a use.
type extra struct{ http.ResponseWriter }

func (e extra) Push(target string, opts *http.PushOptions) error {
	if p, ok := e.ResponseWriter.(http.Pusher); ok {
		return p.Push("/extra.js", opts) // want `replace Push`
	}
	return http.ErrNotSupported
}

// A server method that pushes the assets of its manifest.
type server struct{ manifest map[string][]string }

func (s *server) serveIndex(w http.ResponseWriter, r *http.Request) {
	if p, ok := w.(http.Pusher); ok && r.ProtoMajor == 2 {
		for _, a := range s.manifest[r.URL.Path] {
			_ = p.Push(a, nil) // want `replace Push`
		}
	}
}

// An interface that embeds http.Pusher still calls http.Pusher's Push.
type pushFlusher interface {
	http.Pusher
	http.Flusher
}

func stream(pf pushFlusher) {
	pf.Push("/events.js", nil) // want `replace Push`
	pf.Flush()
}

// PushOptions passed by value to a helper.
func callSend() { sendOpts(http.PushOptions{Method: "HEAD"}) } // want `HTTP/2 server push options`

// A handler registered as a closure on a mux.
func routes(mux *http.ServeMux) {
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if p, ok := w.(http.Pusher); ok {
			p.Push("/favicon.ico", nil) // want `replace Push`
		}
	})
}

// Push whose error decides the response.
func strict(w http.ResponseWriter) error {
	p, ok := w.(http.Pusher)
	if !ok {
		return http.ErrNotSupported
	}
	return p.Push("/critical.css", nil) // want `replace Push`
}

// A directive without a reason silences nothing.
func careless(w http.ResponseWriter) {
	p, _ := w.(http.Pusher)
	//leakvet:ignore
	p.Push("/a.js", nil) // want `needs a reason`
}

// A method value handed to a helper pushes all the same.
func eachAsset(w http.ResponseWriter, assets []string) {
	if p, ok := w.(http.Pusher); ok {
		forEach(assets, p.Push) // want `replace Push`
	}
}

func forEach(xs []string, f func(string, *http.PushOptions) error) {
	for _, x := range xs {
		_ = f(x, nil)
	}
}

// Asserting and pushing in one expression is one finding.
func chained(w http.ResponseWriter) {
	w.(http.Pusher).Push("/x.js", &http.PushOptions{}) // want `replace Push`
}

// ---- Not reported ----

// A type switch that only probes the writer's abilities pushes nothing.
func abilities(w http.ResponseWriter) string {
	switch w.(type) {
	case http.Pusher:
		return "push"
	case http.Flusher:
		return "flush"
	}
	return ""
}

// A wrapper that keeps the wrapped writer's interfaces probes for Pusher
// without pushing.
func wrapKind(w http.ResponseWriter) int {
	kind := 0
	if _, ok := w.(http.Pusher); ok {
		kind |= 1
	}
	if _, ok := w.(http.Flusher); ok {
		kind |= 2
	}
	return kind
}

// A helper whose signature names PushOptions pushes nothing itself.
func sendOpts(o http.PushOptions) { _ = o }

// A fake Pusher for tests records targets; it calls nothing.
type fakePusher struct{ targets []string }

func (f *fakePusher) Push(target string, _ *http.PushOptions) error {
	f.targets = append(f.targets, target)
	return nil
}

// A struct field of type http.Pusher that is never used to push.
type capabilities struct {
	pusher  http.Pusher
	flusher http.Flusher
}

// Preloading on HTTP/2 only, with a header.
func preloadH2(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		w.Header().Add("Link", "</critical.css>; rel=preload; as=style")
	}
}

// Logging the writer's type mentions no push API.
func describeWriter(w http.ResponseWriter) { log.Printf("%T", w) }

// A ResponseWriter wrapper that keeps the wrapped writer's abilities
// forwards Push: supporting push for others is not using it.
type recorder struct {
	http.ResponseWriter
	status int
}

func (rw *recorder) Push(target string, opts *http.PushOptions) error {
	if p, ok := rw.ResponseWriter.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return http.ErrNotSupported
}

// Compile-time interface checks.
var _ http.Pusher = (*recorder)(nil)

// Preloading with a Link header, the replacement.
func preload(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("Link", "</app.js>; rel=preload; as=script")
	w.WriteHeader(http.StatusEarlyHints)
	w.WriteHeader(http.StatusOK)
}

// Other abilities of the writer.
func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if h, ok := w.(http.Hijacker); ok {
		_ = h
	}
}

// A Push method of an unrelated type.
type stack []int

func (s *stack) Push(v int) { *s = append(*s, v) }

func useStack() {
	var s stack
	s.Push(1)
	s.Push(2)
}

// An interface of its own that happens to be called Pusher.
type Pusher interface {
	Push(target string, opts *http.PushOptions) error
}

type queue struct{ items []string }

func (q *queue) Push(target string, _ *http.PushOptions) error {
	q.items = append(q.items, target)
	return nil
}

func enqueue(p Pusher) { _ = p.Push("/job", nil) }

// A generic container with Push.
type list[T any] struct{ items []T }

func (l *list[T]) Push(v T) { l.items = append(l.items, v) }

func useList() {
	var l list[string]
	l.Push("/app.js")
}

// A comment or a string that names push: "w.(http.Pusher)".
func describe() string { return "http.Pusher and Push are deprecated by browsers" }

// A function value named push that is not server push.
func notify(push func(string)) { push("event") }

// A deliberate, explained use is silenced.
func legacy(w http.ResponseWriter) {
	//leakvet:ignore an embedded-device client still relies on push
	if p, ok := w.(http.Pusher); ok {
		p.Push("/fw.bin", nil) //leakvet:ignore same device
	}
}

// A method expression value is not a call.
var pushFunc = (*recorder).Push

// Asserting an unrelated interface that has a Push method.
type streamPusher interface{ Push(v int) }

func feed(x any) {
	if sp, ok := x.(streamPusher); ok {
		sp.Push(1)
	}
}
