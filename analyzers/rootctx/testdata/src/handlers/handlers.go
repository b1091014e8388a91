// Package handlers holds HTTP handlers, middleware, workers and helpers
// that start from a fresh root context, or only look like they do.
package handlers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"
)

type Store interface {
	Get(ctx context.Context, id string) (string, error)
	Put(ctx context.Context, id, v string) error
	Flush(ctx context.Context) error
}

type Message struct {
	Topic string
	Data  []byte
}

type Hub struct {
	store Store
	db    *sql.DB
	http  *http.Client
	once  sync.Once
	ctx   context.Context
	stop  context.CancelFunc
	subs  chan chan Message
}

// audit is started as a goroutine with a root context as its argument.
func (h *Hub) audit(ctx context.Context, what string) { h.store.Put(ctx, "audit", what) }

// flushCache is a same-package helper without a context of its own: its
// callers that have one are reported.
func (h *Hub) flushCache() error {
	return h.store.Flush(context.Background())
}

// group runs callbacks that get a context of their own.
type group struct{ fns []func(context.Context) error }

func (g *group) Go(fn func(context.Context) error) { g.fns = append(g.fns, fn) }

// ---- Reported ----

// The production failure: the handler's timeout starts from a new root,
// so the query outlives a client that has gone away.
func (h *Hub) getUser(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // want `context.Background\(\) detaches this work from the request: derive it from r.Context\(\)`
	defer cancel()
	v, err := h.store.Get(ctx, r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	io.WriteString(w, v)
}

// A store method that takes ctx and ignores it for a TODO.
func (h *Hub) saveTopic(ctx context.Context, topic string) error {
	_, err := h.db.ExecContext(context.TODO(), "INSERT INTO topics VALUES (?)", topic) // want `context.TODO\(\) ignores the caller's ctx: use ctx`
	return err
}

// Middleware: the handler closure has its own request.
func withUser(store Store, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, err := store.Get(context.Background(), r.Header.Get("X-User")) // want `detaches this work from the request: derive it from r.Context\(\)`
		if err != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		r.Header.Set("X-User-Name", user)
		next.ServeHTTP(w, r)
	})
}

// A goroutine started by a handler, detached from the request.
func (h *Hub) publish(w http.ResponseWriter, r *http.Request) {
	msg := Message{Topic: r.FormValue("topic"), Data: []byte(r.FormValue("data"))}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // want `context.Background\(\) detaches this goroutine from the request: derive it from r.Context\(\), or context.WithoutCancel\(r.Context\(\)\) if it must outlive the request`
		defer cancel()
		h.store.Put(ctx, msg.Topic, string(msg.Data))
	}()
	w.WriteHeader(http.StatusAccepted)
}

// A method started as a goroutine with a root context as its argument.
func (h *Hub) deleteTopic(w http.ResponseWriter, r *http.Request) {
	go h.audit(context.Background(), "delete "+r.URL.Path) // want `detaches this goroutine from the request`
	w.WriteHeader(http.StatusNoContent)
}

// A worker pool loop: every job ignores the pool's ctx.
func (h *Hub) runWorkers(ctx context.Context, jobs <-chan Message) {
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for j := range jobs {
				h.store.Put(context.Background(), j.Topic, string(j.Data)) // want `context.Background\(\) ignores the caller's ctx: use ctx`
			}
		})
	}
	wg.Wait()
}

// A closure that captures a context variable of its enclosing function.
func (h *Hub) watch(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	retry := func(topic string) error {
		if ctx.Err() == nil {
			log.Printf("retrying %s", topic)
		}
		return h.store.Put(context.TODO(), topic, "") // want `context.TODO\(\) ignores the caller's parent: use parent`
	}
	retry("a")
}

// A same-package helper without a context, called from a handler.
func (h *Hub) purge(w http.ResponseWriter, r *http.Request) {
	if err := h.flushCache(); err != nil { // want `Hub.flushCache starts from context.Background\(\) although r is in reach here: add a ctx parameter to Hub.flushCache and pass r.Context\(\)`
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// A cache warmer that checks the context only while it is live: the
// branch runs with ctx alive, so its root is a leak.
func (h *Hub) warm(ctx context.Context, topics []string) error {
	if ctx.Err() == nil {
		for _, t := range topics {
			if _, err := h.store.Get(context.Background(), t); err != nil { // want `context.Background\(\) ignores the caller's ctx: use ctx`
				return err
			}
		}
	}
	return ctx.Err()
}

// A session context returned to the caller from a new root: no automatic
// fix, since the caller may need it to outlive ctx.
func (h *Hub) session(ctx context.Context, user string) (context.Context, context.CancelFunc) {
	h.store.Put(ctx, "session", user)
	return context.WithTimeout(context.Background(), 30*time.Minute) // want `context.Background\(\) detaches this context from the caller's ctx: derive it from ctx, or context.WithoutCancel\(ctx\) if it must outlive the call`
}

// An SSE stream that subscribes from a new root before its flush loop.
func (h *Hub) stream(w http.ResponseWriter, r *http.Request) {
	f, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusNotImplemented)
		return
	}
	last, _ := h.store.Get(context.Background(), "last:"+r.URL.Query().Get("topic")) // want `derive it from r.Context\(\)`
	fmt.Fprintf(w, "id: %s\n\n", last)
	f.Flush()
	ch := make(chan Message)
	h.subs <- ch
	for {
		select {
		case <-r.Context().Done():
			return
		case m := <-ch:
			fmt.Fprintf(w, "data: %s\n\n", m.Data)
			f.Flush()
		}
	}
}

// A reverse proxy building its upstream request from a new root.
func (h *Hub) forward(w http.ResponseWriter, in *http.Request) {
	out, err := http.NewRequestWithContext(context.Background(), in.Method, "http://backend"+in.URL.Path, in.Body) // want `derive it from in.Context\(\)`
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	resp, err := h.http.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	io.Copy(w, resp.Body)
}

// A context parameter that is named but never used.
func (h *Hub) Close(ctx context.Context) error {
	return h.store.Flush(context.TODO()) // want `context.TODO\(\) ignores the caller's ctx: use ctx`
}

// A callback with a context of its own inside a handler: the innermost
// context is the one to use.
func (h *Hub) fanOut(w http.ResponseWriter, r *http.Request) {
	var g group
	for _, t := range r.URL.Query()["topic"] {
		g.Go(func(gctx context.Context) error {
			return h.store.Put(context.Background(), t, "") // want `ignores the caller's gctx: use gctx`
		})
	}
}

// A job struct whose run func, built in a ctx-taking method, starts from
// a root.
type job struct {
	name string
	run  func() error
}

func (h *Hub) schedule(ctx context.Context, topic string) job {
	return job{name: topic, run: func() error {
		return h.store.Flush(context.Background()) // want `ignores the caller's ctx: use ctx`
	}}
}

// A function with both a context and a request: the context wins.
func (h *Hub) authorize(ctx context.Context, r *http.Request) error {
	_, err := h.store.Get(context.TODO(), r.Header.Get("Authorization")) // want `context.TODO\(\) ignores the caller's ctx: use ctx`
	return err
}

// A timer callback registered by a handler runs after it returns.
func (h *Hub) expireLater(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	time.AfterFunc(time.Hour, func() {
		h.store.Put(context.Background(), id, "") // want `detaches this work from the request: derive it from r.Context\(\)`
	})
}

// A helper started as a goroutine from a handler.
func (h *Hub) refresh(w http.ResponseWriter, r *http.Request) {
	go h.flushCache() // want `Hub.flushCache starts from context.Background\(\) although r is in reach`
}

// A select that returns when the request ends: the code after it runs
// while the request is live.
func (h *Hub) waitReady(w http.ResponseWriter, r *http.Request, ready <-chan struct{}) {
	select {
	case <-r.Context().Done():
		return
	case <-ready:
	}
	h.store.Flush(context.TODO()) // want `context.TODO\(\) detaches this work from the request: derive it from r.Context\(\)`
}

// A directive without a reason silences nothing.
func (h *Hub) careless(ctx context.Context) error {
	//leakvet:ignore
	return h.store.Flush(context.Background()) // want `needs a reason`
}

// ---- Not reported ----

// main has no caller's context.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	h := NewHub(nil, nil)
	h.Start()
	<-ctx.Done()
}

// init neither.
var ready = func() bool {
	return context.Background().Err() == nil
}()

func init() {
	_ = context.TODO()
}

// A constructor roots the hub's lifetime deliberately.
func NewHub(store Store, db *sql.DB) *Hub {
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{store: store, db: db, ctx: ctx, stop: cancel, subs: make(chan chan Message)}
}

// Start runs server-lifetime work rooted at start-up, through a helper
// whose only callers have no context.
func (h *Hub) Start() {
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for range t.C {
			h.flushCache()
		}
	}()
}

// A Run(ctx) that stores its lifetime root in a field on purpose.
func (h *Hub) Run(ctx context.Context) error {
	h.ctx, h.stop = context.WithCancel(context.Background())
	return ctx.Err()
}

// Work that must outlive the request keeps its values with
// context.WithoutCancel.
func (h *Hub) publishAsync(w http.ResponseWriter, r *http.Request) {
	ctx := context.WithoutCancel(r.Context())
	go func() {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		h.store.Put(ctx, r.FormValue("topic"), r.FormValue("data"))
	}()
}

// Graceful shutdown after the caller's context is done.
func serve(ctx context.Context, srv *http.Server) error {
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	}()
	return srv.ListenAndServe()
}

// Shutdown in the select case on ctx.Done().
func serveUntil(ctx context.Context, srv *http.Server) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx)
	}
}

// Cleanup in a branch that found the caller's context cancelled.
func (h *Hub) putOrRollback(ctx context.Context, id, v string) error {
	err := h.store.Put(ctx, id, v)
	if errors.Is(err, context.Canceled) {
		rbCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		h.store.Put(rbCtx, id, "")
	}
	if ctx.Err() != nil {
		return h.store.Flush(context.Background())
	}
	return err
}

// The SSE stream unsubscribes after its flush loop has seen the request end.
func (h *Hub) streamAndUnsubscribe(w http.ResponseWriter, r *http.Request) {
	f := http.NewResponseController(w)
	ch := make(chan Message)
	h.subs <- ch
loop:
	for {
		select {
		case <-r.Context().Done():
			break loop
		case m := <-ch:
			fmt.Fprintf(w, "data: %s\n\n", m.Data)
			f.Flush()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	h.store.Put(ctx, "gone", r.RemoteAddr)
}

// Deferred cleanup that must run even when the request was cancelled.
func (h *Hub) lockedUpdate(w http.ResponseWriter, r *http.Request) {
	h.store.Put(r.Context(), "lock", "held")
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		h.store.Put(ctx, "lock", "")
	}()
}

// The fallback for callers that pass a nil context.
func (h *Hub) Get(ctx context.Context, id string) (string, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	return h.store.Get(ctx, id)
}

// A context parameter named _ declares that the method does not use it.
func (h *Hub) Flush(_ context.Context) error {
	return h.store.Flush(context.Background())
}

// Lazy initialisation of a hub-lifetime resource under sync.Once.
func (h *Hub) lazyStart(w http.ResponseWriter, r *http.Request) {
	h.once.Do(func() {
		h.ctx, h.stop = context.WithCancel(context.Background())
		h.flushCache()
	})
}

// Comparing with the root context starts no work.
func deadlineOf(ctx context.Context) string {
	if ctx == context.Background() {
		return "none"
	}
	d, _ := ctx.Deadline()
	return d.String()
}

// A helper that hands its context to the caller is an accessor: the
// caller sees the root it gets.
func (h *Hub) baseContext() context.Context {
	if h.ctx != nil {
		return h.ctx
	}
	return context.Background()
}

func (h *Hub) status(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintln(w, h.baseContext().Err())
}

// A helper that only starts a background goroutine is not followed.
func (h *Hub) startJanitor() {
	go func() {
		h.store.Flush(context.Background())
	}()
}

func (h *Hub) Open(ctx context.Context) error {
	h.startJanitor()
	return ctx.Err()
}

// An explained, deliberate root is silenced.
func (h *Hub) metrics(w http.ResponseWriter, r *http.Request) {
	//leakvet:ignore the scrape must finish even when Prometheus hangs up
	n, _ := h.store.Get(context.Background(), "count")
	io.WriteString(w, n)
}

// A request parameter named _ gives no context.
func ping(w http.ResponseWriter, _ *http.Request) {
	io.WriteString(w, fmt.Sprint(context.Background().Err()))
}

// Helpers are followed one level only: reindex reaches a root through
// flushCache, whose own callers are reported.
func (h *Hub) reindex() error {
	if err := h.flushCache(); err != nil {
		return fmt.Errorf("reindex: %w", err)
	}
	return nil
}

func (h *Hub) Maintain(ctx context.Context) error {
	return h.reindex()
}

// An exported convenience API without a context is its callers' choice,
// like net.Dial beside DialContext.
func (h *Hub) Compact() error {
	return h.compactContext(context.Background())
}

func (h *Hub) compactContext(ctx context.Context) error { return h.store.Flush(ctx) }

func (h *Hub) Rotate(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return h.Compact()
}

// A client constructor whose dial uses ctx but whose own lifetime is
// rooted on purpose, stored in the struct through local variables and
// ended by Close.
type client struct {
	ctx    context.Context
	cancel context.CancelFunc
	hub    *Hub
}

func dialClient(ctx context.Context, h *Hub) (*client, error) {
	cctx, cancel := context.WithCancel(context.Background())
	cl := &client{ctx: cctx, cancel: cancel, hub: h}
	if _, err := h.store.Get(ctx, "hello"); err != nil {
		cancel()
		return nil, err
	}
	return cl, nil
}

func (cl *client) close() { cl.cancel() }

// A connection context kept apart from the caller's so that the pages on
// it can be closed first; it is cancelled once ctx is done.
func (h *Hub) attach(ctx context.Context, conns chan<- context.Context) {
	connCtx, cancel := context.WithCancel(context.Background())
	go func() {
		<-ctx.Done()
		h.store.Flush(connCtx)
		cancel()
	}()
	conns <- connCtx
}

// The same, with context.AfterFunc tying the cancel to ctx.
func (h *Hub) attachAfter(ctx context.Context, conns chan<- context.Context) {
	connCtx, cancel := context.WithCancel(context.Background())
	context.AfterFunc(ctx, cancel)
	conns <- connCtx
}

// Graceful shutdown after an interrupt: ctx may be long gone, or still
// live, and the drain needs a deadline of its own either way.
func serveUntilSignal(ctx context.Context, srv *http.Server) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case <-sigs:
	case err := <-errc:
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// A worker loop that drains on its stop channel.
func (h *Hub) drain(ctx context.Context, jobs <-chan Message, stopCh <-chan struct{}) {
	for {
		select {
		case j := <-jobs:
			h.store.Put(ctx, j.Topic, string(j.Data))
		case <-stopCh:
			flushCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			h.store.Flush(flushCtx)
			cancel()
			return
		}
	}
}

// The else branch of a live-context test runs once ctx is done.
func (h *Hub) saveOrPark(ctx context.Context, id, v string) error {
	if ctx.Err() == nil {
		return h.store.Put(ctx, id, v)
	} else {
		parkCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return h.store.Put(parkCtx, "parked:"+id, v)
	}
}
