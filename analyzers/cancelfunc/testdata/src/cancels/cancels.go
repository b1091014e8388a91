// Package cancels holds handlers, middleware, worker pools and SSE streams
// that derive contexts, and either lose their cancel funcs or only look
// like they do.
package cancels

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"
)

var (
	errBusy  = errors.New("busy")
	errEmpty = errors.New("empty response body")
)

func fetch(ctx context.Context, url string) error { return ctx.Err() }

func authorize(ctx context.Context, r *http.Request) error { return nil }

// withBudget gives a request its time budget: a same-package wrapper whose
// cancel func the caller must call.
func withBudget(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	return ctx, cancel
}

// withDeadline passes the whole result on.
func withDeadline(ctx context.Context, at time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(ctx, at)
}

// Close waits for the streams but forgets s.cancel (see newStreamer).
func (s *streamer) Close() error {
	s.conns.Wait()
	return nil
}

// unsubscribe drops a subscriber's cancel func without calling it (see
// hub.subscribe).
func (h *hub) unsubscribe(id string) {
	h.mu.Lock()
	delete(h.cancels, id)
	h.mu.Unlock()
}

// watchdog is a single-result wrapper: its caller must call the func.
func (s *streamer) watchdog(d time.Duration) func() {
	ctx, cancel := context.WithTimeout(s.ctx, d)
	go func() { <-ctx.Done() }()
	return cancel
}

// bodyTimer stops a request's timer when the caller is done with the
// body.
type bodyTimer struct {
	io.ReadCloser
	stop func()
}

func (b *bodyTimer) Close() error {
	err := b.ReadCloser.Close()
	b.stop()
	return err
}

// ---- Reported ----

// The cancel func is thrown away at creation.
func lookup(w http.ResponseWriter, r *http.Request) {
	ctx, _ := context.WithTimeout(r.Context(), time.Second) // want `the cancel func of context.WithTimeout is assigned to _: its timer and context live until the deadline; keep it and defer cancel\(\)`
	_ = fetch(ctx, "http://backend/lookup")
}

// The compiler is silenced with _ = cancel, which vet's lostcancel counts
// as a use.
func silenced(r *http.Request) error {
	ctx, cancel := context.WithCancel(r.Context())
	_ = cancel // want `cancel is assigned to _ and never called: its context stays attached to the parent until the parent is canceled; defer cancel\(\) instead`
	return fetch(ctx, "http://backend/silenced")
}

// Printing the func is not calling it.
func printed(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, time.Second)
	log.Println("deadline set", cancel) // want `cancel is only printed, never called`
	return fetch(ctx, "http://backend/printed")
}

// A copy that nobody calls.
func copied(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	stop := cancel // want `cancel is copied to stop, which is never called`
	_ = stop
	return fetch(ctx, "http://backend/copied")
}

// A streamer keeps its cancel func but Close forgets it.
type streamer struct {
	ctx    context.Context
	cancel context.CancelFunc
	conns  sync.WaitGroup
}

func newStreamer(parent context.Context) *streamer {
	s := &streamer{}
	s.ctx, s.cancel = context.WithCancel(parent) // want `s.cancel is stored but never called: call it in Close`
	return s
}

// A poller stores the func through a local copy; nothing calls the field.
type poller struct {
	stop func()
}

func (p *poller) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	p.stop = cancel // want `p.stop is stored but never called: add a Close method to poller that calls it`
	go func() {
		<-ctx.Done()
	}()
}

// A job built with a composite literal whose cancel field is never called.
type job struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newJob(parent context.Context) *job {
	ctx, cancel := context.WithCancelCause(parent)
	return &job{ctx: ctx, cancel: cancel} // want `job.cancel is stored but never called: add a Close method to job that calls it`
}

// A hub keeps one cancel func per subscriber and deletes them without
// calling them.
type hub struct {
	mu      sync.Mutex
	cancels map[string]context.CancelFunc
}

func (h *hub) subscribe(parent context.Context, id string) context.Context {
	ctx, cancel := context.WithCancel(parent)
	h.mu.Lock()
	h.cancels[id] = cancel // want `the funcs stored in h.cancels are never called`
	h.mu.Unlock()
	return ctx
}

// The first context is overwritten by the second before it is canceled.
func proxy(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	ctx, cancel = context.WithTimeout(ctx, 5*time.Second) // want `cancel is overwritten before it is called, so the context from context.WithCancel leaks`
	defer cancel()
	_ = fetch(ctx, "http://upstream")
}

// A worker pool defers cancel inside its loop: the contexts pile up until
// the worker exits, which is never.
func worker(parent context.Context, jobs <-chan string) {
	for url := range jobs {
		ctx, cancel := context.WithTimeout(parent, time.Second)
		defer cancel() // want `defer cancel\(\) in a loop runs only when the function returns.*call cancel at the end of each iteration \(or move the body into a function\)`
		_ = fetch(ctx, url)
	}
}

// An SSE stream gives each write its own deadline and defers the cancel.
func events(w http.ResponseWriter, r *http.Request, updates <-chan string) {
	f, _ := w.(http.Flusher)
	for msg := range updates {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer func() { cancel() }() // want `defer cancel\(\) in a loop`
		if ctx.Err() != nil {
			return
		}
		fmt.Fprintf(w, "data: %s\n\n", msg)
		f.Flush()
	}
}

// The auth failure returns before the defer.
func guarded(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	if err := authorize(ctx, r); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return // want `cancel is not called on the path through this return: defer cancel\(\) right after context.WithTimeout`
	}
	defer cancel()
	_ = fetch(ctx, "http://backend/guarded")
}

// The cause variant, cancelled only on success.
func loadCause(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	if err := fetch(ctx, "http://backend/a"); err != nil {
		return err // want `cancel is not called on the path through this return`
	}
	cancel(nil)
	return nil
}

// The stop func of signal.NotifyContext thrown away: the signal stays
// captured for good.
func serve(srv *http.Server) error {
	ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt) // want `the stop func of signal.NotifyContext is assigned to _: the signal stays captured`
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	return srv.ListenAndServe()
}

// A same-package wrapper's cancel func thrown away.
func budgeted(w http.ResponseWriter, r *http.Request) {
	ctx, _ := withBudget(r.Context()) // want `the cancel func of withBudget is assigned to _: its timer and context live until the deadline`
	_ = fetch(ctx, "http://backend/budgeted")
}

// A wrapper of a wrapper, lost on the error path.
func retryDeadline(parent context.Context, at time.Time, urls []string) error {
	ctx, cancel := withDeadline(parent, at)
	if len(urls) == 0 {
		return errBusy // want `cancel is not called on the path through this return: defer cancel\(\) right after withDeadline`
	}
	defer cancel()
	return fetch(ctx, urls[0])
}

// A retry loop that skips the cancel on the continue path.
func retry(parent context.Context, urls []string) {
	for _, u := range urls {
		ctx, cancel := context.WithDeadline(parent, time.Now().Add(time.Second)) // want `cancel is not called before the next iteration replaces it: call cancel at the end of each iteration`
		if err := fetch(ctx, u); err != nil {
			continue
		}
		cancel()
	}
}

// Cancelled only when the fetch succeeds; the function then falls off its
// end.
func warm(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, time.Second) // want `cancel is not called on the path that reaches the end of the function`
	if fetch(ctx, "http://cache/warm") == nil {
		cancel()
	}
}

// A single-result wrapper whose stop func is dropped on the floor.
func (s *streamer) ping() {
	s.watchdog(time.Second) // want `the cancel func of streamer.watchdog is discarded: its timer and context live until the deadline; keep it and defer cancel\(\)`
}

// The stop func is handed to the body on success (deferring it would cut
// the body read short), called on the errors, and forgotten when the
// transport gives no body.
func get(c *http.Client, parent context.Context, url string) (*http.Response, error) {
	ctx, stop := context.WithTimeout(parent, 10*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		stop()
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		stop()
		return nil, err
	}
	if resp.Body == nil {
		return nil, errEmpty // want `stop is not called on the path through this return: call stop\(\) before this return`
	}
	resp.Body = &bodyTimer{ReadCloser: resp.Body, stop: stop}
	return resp, nil
}

// A dial helper hands the cancel func to its caller with the conn, but
// the failed dial drops it.
func dialBackend(parent context.Context, addr string) (net.Conn, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(parent, 30*time.Second)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err // want `cancel is not called on the path through this return: call cancel\(\) before this return`
	}
	return conn, cancel, nil
}

// A watcher goroutine owns cancel, but the auth failure returns before
// the goroutine starts.
func watch(parent context.Context, r *http.Request, events <-chan string) (context.Context, error) {
	ctx, cancel := context.WithCancel(parent)
	if err := authorize(ctx, r); err != nil {
		return nil, err // want `cancel is not called on the path through this return: call cancel\(\) before this return`
	}
	go func() {
		defer cancel()
		for range events {
		}
	}()
	return ctx, nil
}

// A poller's fan-out defers inside a range over its targets, but the
// ticker loop around it never ends: the contexts pile up for the life of
// the poller.
func pollAll(parent context.Context, tick <-chan time.Time, targets []string) {
	for range tick {
		for _, t := range targets {
			ctx, cancel := context.WithTimeout(parent, time.Second)
			defer cancel() // want `defer cancel\(\) in a loop runs only when the function returns`
			_ = fetch(ctx, t)
		}
	}
}

// ---- Not reported ----

// The canonical shape.
func handler(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	_ = fetch(ctx, "http://backend/handler")
}

// Called on every path, without defer.
func everyPath(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, time.Second)
	if err := fetch(ctx, "http://a"); err != nil {
		cancel()
		return err
	}
	cancel()
	return nil
}

// A same-package wrapper's caller that defers the cancel.
func budgetedOK(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := withBudget(r.Context())
	defer cancel()
	_ = fetch(ctx, "http://backend/ok")
}

// A wrapper with named results hands the func over with a bare return.
func withGrace(parent context.Context) (ctx context.Context, cancel context.CancelFunc) {
	ctx, cancel = context.WithTimeout(context.WithoutCancel(parent), 10*time.Second)
	return
}

// Middleware that hands the cancel func to a cleanup registered on the
// request's lifetime.
type cleanups struct{ fns []func() }

func (c *cleanups) add(f func()) { c.fns = append(c.fns, f) }

func (c *cleanups) run() {
	for _, f := range c.fns {
		f()
	}
}

func middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var cl cleanups
		defer cl.run()
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		cl.add(cancel)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// A server whose Shutdown calls the stored cancel func.
type server struct {
	base   context.Context
	cancel context.CancelFunc
}

func newServer() *server {
	s := &server{}
	s.base, s.cancel = context.WithCancel(context.Background())
	return s
}

func (s *server) Shutdown() {
	if s.cancel != nil {
		s.cancel()
	}
}

// A deferred closure that calls cancel and logs.
func deferredClosure(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, time.Second)
	defer func() {
		cancel()
		log.Println("done")
	}()
	return fetch(ctx, "http://a")
}

// A goroutine owns the cancel func and calls it when it is done.
func background(parent context.Context, done <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		defer cancel()
		<-done
	}()
	return ctx
}

// The cancel func is sent to a supervisor that calls it.
func supervised(parent context.Context, reg chan<- context.CancelFunc) context.Context {
	ctx, cancel := context.WithCancel(parent)
	reg <- cancel
	return ctx
}

// A fan-out that collects the cancel funcs and calls them all.
func fanOut(parent context.Context, urls []string) {
	var cancels []context.CancelFunc
	for _, u := range urls {
		ctx, cancel := context.WithTimeout(parent, time.Second)
		cancels = append(cancels, cancel)
		go fetch(ctx, u)
	}
	for _, c := range cancels {
		c()
	}
}

// A registry that calls a subscriber's func when it leaves.
type registry struct {
	mu   sync.Mutex
	subs map[string]context.CancelFunc
}

func (g *registry) join(parent context.Context, id string) context.Context {
	ctx, cancel := context.WithCancel(parent)
	g.mu.Lock()
	g.subs[id] = cancel
	g.mu.Unlock()
	return ctx
}

func (g *registry) leave(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cancel, ok := g.subs[id]; ok {
		cancel()
		delete(g.subs, id)
	}
}

// An SSE loop that cancels each write's context at the end of the
// iteration.
func stream(w http.ResponseWriter, r *http.Request, updates <-chan string) {
	rc := http.NewResponseController(w)
	for msg := range updates {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		_ = fetch(ctx, msg)
		cancel()
		fmt.Fprintf(w, "data: %s\n\n", msg)
		rc.Flush()
	}
}

// The loop body moved into a function literal: the defer runs per call.
func perItem(parent context.Context, jobs []string) {
	for _, url := range jobs {
		func() {
			ctx, cancel := context.WithTimeout(parent, time.Second)
			defer cancel()
			_ = fetch(ctx, url)
		}()
	}
}

// The previous iteration's func is called, nil-guarded, before the next
// one replaces it.
func rolling(parent context.Context, ticks <-chan time.Time) {
	var ctx context.Context
	var cancel context.CancelFunc
	for range ticks {
		if cancel != nil {
			cancel()
		}
		ctx, cancel = context.WithTimeout(parent, time.Minute)
		go fetch(ctx, "http://metrics")
	}
	if cancel != nil {
		cancel()
	}
}

// A retry loop that defers but returns in the same iteration.
func firstAnswer(parent context.Context, urls []string) error {
	for _, u := range urls {
		ctx, cancel := context.WithTimeout(parent, time.Second)
		defer cancel()
		return fetch(ctx, u)
	}
	return errBusy
}

// The stop func of NotifyContext deferred in main-like code; log.Fatal
// exits before it is reached.
func run(addr string) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	if addr == "" {
		log.Fatal("no address")
	}
	defer stop()
	<-ctx.Done()
}

// A deferred closure written before the context is made.
func lazy(parent context.Context, slow bool) error {
	var cancel context.CancelFunc
	defer func() {
		if cancel != nil {
			cancel()
		}
	}()
	ctx := parent
	if slow {
		ctx, cancel = context.WithTimeout(parent, time.Minute)
	}
	return fetch(ctx, "http://a")
}

// The optional timeout with a no-op default.
func optional(parent context.Context, d time.Duration) error {
	ctx, cancel := parent, context.CancelFunc(func() {})
	if d > 0 {
		ctx, cancel = context.WithTimeout(parent, d)
	}
	defer cancel()
	return fetch(ctx, "http://a")
}

// A copy that is deferred.
func copiedOK(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	release := cancel
	defer release()
	return fetch(ctx, "http://a")
}

// Exported fields are for callers in other packages to call.
type Request struct {
	Ctx    context.Context
	Cancel context.CancelFunc
}

func NewRequest(parent context.Context) *Request {
	ctx, cancel := context.WithTimeout(parent, time.Minute)
	return &Request{Ctx: ctx, Cancel: cancel}
}

// time.AfterFunc calls the func when the budget runs out.
func budgetTimer(parent context.Context) context.Context {
	ctx, cancel := context.WithCancel(parent)
	time.AfterFunc(time.Minute, cancel)
	return ctx
}

// A deliberate, explained leak is silenced.
func forever() context.Context {
	//leakvet:ignore the process-wide context lives as long as the process
	ctx, _ := context.WithCancel(context.Background())
	return ctx
}

// The single-result wrapper deferred where it is made.
func (s *streamer) pingOK() {
	defer s.watchdog(time.Second)()
}

// A closure that cancels and logs, handed to a cleanup.
func cleanupClosure(parent context.Context, cl *cleanups) context.Context {
	ctx, cancel := context.WithCancel(parent)
	cl.add(func() {
		cancel()
		log.Println("request context released")
	})
	return ctx
}

// A generic pool whose field is called through a method value.
type pool[T any] struct {
	items  []T
	cancel context.CancelFunc
}

func newPool[T any](parent context.Context, cl *cleanups) *pool[T] {
	p := &pool[T]{}
	_, p.cancel = context.WithCancel(parent)
	cl.add(p.cancel)
	return p
}

// A wrapper's result returned straight to the caller.
func passOn(parent context.Context) (context.Context, context.CancelFunc) {
	return withBudget(parent)
}

// context.AfterFunc ties the cancel func to another context.
func linked(parent, other context.Context) context.Context {
	ctx, cancel := context.WithCancel(parent)
	context.AfterFunc(other, cancel)
	return ctx
}

// A helper fills in the func through a pointer.
func arm(parent context.Context, cancel *context.CancelFunc) context.Context {
	var ctx context.Context
	ctx, *cancel = context.WithCancel(parent)
	return ctx
}

func armed(parent context.Context) error {
	var cancel context.CancelFunc
	ctx := arm(parent, &cancel)
	defer cancel()
	return fetch(ctx, "http://a")
}

type dialResult struct {
	err     error
	primary bool
}

func race(ctx context.Context, addr string, primary bool, results chan<- dialResult) {
	results <- dialResult{err: fetch(ctx, addr), primary: primary}
}

// Happy eyeballs: the fallback racer's context must outlive the select
// case that starts it (the timer fires once), so its cancel is deferred to
// the end of the dial.
func dialParallel(ctx context.Context, primary, fallback string) error {
	results := make(chan dialResult, 2)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	go race(pctx, primary, true, results)

	timer := time.NewTimer(300 * time.Millisecond)
	defer timer.Stop()
	failed := 0
	for {
		select {
		case <-timer.C:
			fctx, fcancel := context.WithCancel(ctx)
			defer fcancel()
			go race(fctx, fallback, false, results)
		case res := <-results:
			if res.err == nil {
				return nil
			}
			if failed++; failed == 2 {
				return res.err
			}
		}
	}
}

// A DNS exchange tries UDP, then TCP: at most two deferred cancels, all
// released when the exchange returns.
func exchange(ctx context.Context, server string, useTCP bool) error {
	networks := []string{"udp", "tcp"}
	if useTCP {
		networks = []string{"tcp"}
	}
	for _, network := range networks {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := fetch(ctx, network+"://"+server); err == nil {
			return nil
		}
	}
	return errBusy
}

// Failover over a replica list, giving each attempt its share of the
// deadline: the loop ends with the list and the function right after.
func failover(ctx context.Context, replicas []string) error {
	for i, addr := range replicas {
		attemptCtx := ctx
		if deadline, ok := ctx.Deadline(); ok {
			share := time.Until(deadline) / time.Duration(len(replicas)-i)
			var cancel context.CancelFunc
			attemptCtx, cancel = context.WithDeadline(ctx, time.Now().Add(share))
			defer cancel()
		}
		if err := fetch(attemptCtx, addr); err == nil {
			return nil
		}
	}
	return errBusy
}
