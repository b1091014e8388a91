// Package leak holds handlers, workers and streaming loops whose
// goroutines can block or run forever, and correct code that looks alike.
package leak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"
)

type result struct {
	body []byte
	err  error
}

func fetch(ctx context.Context, url string) ([]byte, error) { return nil, nil }

func lookupUser(id string) (string, error) { return id, nil }

// ---- Reported ----

// The classic: the handler gives up on ctx, the send blocks forever.
func profile(w http.ResponseWriter, r *http.Request) {
	ch := make(chan result) // buffered by the fix
	go func() {             // want `goroutine leak: the send on unbuffered ch blocks forever once the caller returns without receiving; make ch buffered \(make\(chan result, 1\)\)`
		b, err := fetch(r.Context(), "http://upstream/profile")
		ch <- result{b, err}
	}()
	select {
	case res := <-ch:
		w.Write(res.body)
	case <-r.Context().Done():
		http.Error(w, "timeout", http.StatusGatewayTimeout)
		return
	}
}

// A timeout case abandons the result just the same.
func nameWithTimeout(ctx context.Context, id string) (string, error) {
	names := make(chan string) // buffered by the fix
	go func() {                // want `the send on unbuffered names blocks forever`
		n, _ := lookupUser(id)
		names <- n
	}()
	select {
	case n := <-names:
		return n, nil
	case <-time.After(2 * time.Second):
		return "", errors.New("lookup timed out")
	}
}

// An early return between the go statement and the receive.
func validateAndLoad(ctx context.Context, id string) ([]byte, error) {
	done := make(chan error) // buffered by the fix
	go func() {              // want `the send on unbuffered done blocks forever`
		_, err := fetch(ctx, "http://cache/warm")
		done <- err
	}()
	if id == "" {
		return nil, errors.New("empty id")
	}
	if err := <-done; err != nil {
		return nil, err
	}
	return fetch(ctx, "http://store/"+id)
}

// A same-package function started as the goroutine, the channel passed in.
func resolve(ctx context.Context, host string, out chan<- []net.IP) {
	ips, _ := net.DefaultResolver.LookupIP(ctx, "ip", host)
	out <- ips
}

func resolveHandler(w http.ResponseWriter, r *http.Request) {
	ips := make(chan []net.IP)                              // buffered by the fix
	go resolve(r.Context(), r.URL.Query().Get("host"), ips) // want `the send on unbuffered ips blocks forever`
	select {
	case v := <-ips:
		json.NewEncoder(w).Encode(v)
	case <-r.Context().Done():
	}
}

// A func literal that takes the channel as its parameter.
func ping(ctx context.Context, addr string) error {
	errc := make(chan error)    // buffered by the fix
	go func(out chan<- error) { // want `the send on unbuffered errc blocks forever`
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		out <- err
	}(errc)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Fan-out: the first error returns and leaves the other senders blocked.
func fetchAll(ctx context.Context, urls []string) ([][]byte, error) {
	ch := make(chan result)
	for _, u := range urls {
		go func() { // want `goroutines started in a loop block forever sending on unbuffered ch once the receiver stops early`
			b, err := fetch(ctx, u)
			ch <- result{b, err}
		}()
	}
	var out [][]byte
	for range urls {
		res := <-ch
		if res.err != nil {
			return nil, res.err
		}
		out = append(out, res.body)
	}
	return out, nil
}

// Fan-out with a closer, where the receiver breaks out on an error.
func firstFailure(ctx context.Context, urls []string) error {
	var wg sync.WaitGroup
	ch := make(chan error)
	for _, u := range urls {
		wg.Add(1)
		go func() { // want `goroutines started in a loop block forever sending on unbuffered ch`
			defer wg.Done()
			_, err := fetch(ctx, u)
			ch <- err
		}()
	}
	go func() { wg.Wait(); close(ch) }()
	for err := range ch {
		if err != nil {
			return err
		}
	}
	return nil
}

// A worker that ranges over a channel nobody closes, started per request.
func batchHandler(w http.ResponseWriter, r *http.Request) {
	jobs := make(chan string, 16)
	go func() { // want `the goroutine ranges over jobs, which nothing closes, so it never ends; close jobs when the producer is done`
		for j := range jobs {
			log.Println("job", j)
		}
	}()
	for _, id := range r.URL.Query()["id"] {
		jobs <- id
	}
	w.WriteHeader(http.StatusAccepted)
}

// A pool whose job channel is never closed: its workers never end.
type pool struct {
	jobs chan func()
}

func newPool(n int) *pool {
	p := &pool{jobs: make(chan func())}
	for range n {
		go p.work() // want `the goroutine ranges over p.jobs, which nothing closes`
	}
	return p
}

func (p *pool) work() {
	for f := range p.jobs {
		f()
	}
}

func (p *pool) submit(f func()) { p.jobs <- f }

// A for-select with only data and ticker cases: no way out.
type batcher struct {
	in    chan []byte
	batch [][]byte
}

func newBatcher() *batcher {
	b := &batcher{in: make(chan []byte, 64)}
	go b.loop() // want `the goroutine's for-select loop has no case that ends it`
	return b
}

func (b *batcher) loop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case m := <-b.in:
			b.batch = append(b.batch, m)
		case <-t.C:
			b.batch = b.batch[:0]
		}
	}
}

// A per-request pump that forwards updates with no ctx case.
func relay(w http.ResponseWriter, r *http.Request) {
	updates := make(chan string)
	out := make(chan string, 8)
	go func() { // want `for-select loop has no case that ends it`
		for {
			select {
			case u := <-updates:
				out <- u
			case <-time.After(30 * time.Second):
				out <- "keepalive"
			}
		}
	}()
	fmt.Fprint(w, <-out)
}

// A refresher that sleeps forever although it was given a context.
type cache struct {
	mu   sync.Mutex
	data map[string]string
}

func (c *cache) Start(ctx context.Context) {
	go func() { // want `the goroutine's loop sleeps and repeats with no exit`
		for {
			time.Sleep(time.Minute)
			c.mu.Lock()
			c.data = map[string]string{}
			c.mu.Unlock()
		}
	}()
}

// A heartbeat goroutine that ignores its write errors and the request.
func events(w http.ResponseWriter, r *http.Request) {
	f := w.(http.Flusher)
	go func() { // want `the goroutine's loop writes with no exit`
		for {
			fmt.Fprintf(w, ": ping\n\n")
			f.Flush()
			time.Sleep(15 * time.Second)
		}
	}()
	<-r.Context().Done()
}

// An SSE handler whose loop never watches the request.
func clock(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	flusher, _ := w.(http.Flusher)
	for { // want `request leak: this handler loop has no exit, so it runs on after the client has gone; select on req.Context\(\).Done\(\) and return`
		fmt.Fprintf(w, "data: %s\n\n", time.Now().Format(time.RFC3339))
		flusher.Flush()
		time.Sleep(time.Second)
	}
}

// The same over a ticker, with the ResponseController.
func ticks(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for now := range t.C { // want `request leak: this handler loop has no exit`
		fmt.Fprintf(w, "data: %d\n\n", now.Unix())
		rc.Flush()
	}
}

// A handler registered as a closure, streaming a hub channel.
type hub struct{ subs chan chan []byte }

func (h *hub) routes(mux *http.ServeMux) {
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		msgs := make(chan []byte, 16)
		h.subs <- msgs
		for { // want `request leak: this handler loop has no exit`
			select {
			case m := <-msgs:
				w.Write(m)
				w.(http.Flusher).Flush()
			}
		}
	})
}

// Middleware that starts a ticker goroutine per request.
func metrics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() { // want `the goroutine ranges over a ticker with no way out`
			for range time.Tick(time.Second) {
				log.Println("in flight:", r.URL.Path)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// A goroutine whose endless loop is in the helper it calls.
type conn struct {
	wg   sync.WaitGroup
	recv chan []byte
}

func (c *conn) open() {
	c.wg.Add(1)
	go func() { // want `the goroutine's for-select loop has no case that ends it`
		defer c.wg.Done()
		c.pump()
	}()
}

func (c *conn) pump() {
	for {
		select {
		case m := <-c.recv:
			log.Printf("recv %d bytes", len(m))
		}
	}
}

// A done signal sent on an unbuffered channel, abandoned on ctx.
func flushAsync(ctx context.Context, f *os.File) error {
	done := make(chan struct{}) // buffered by the fix
	go func() {                 // want `the send on unbuffered done blocks forever`
		f.Sync()
		done <- struct{}{}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A directive without a reason silences nothing.
func careless(ctx context.Context) {
	//leakvet:ignore
	go func() { // want `goroutine's loop sleeps.*needs a reason`
		for {
			time.Sleep(time.Second)
		}
	}()
}

// A websocket-style reader that keeps decoding into an unbuffered
// channel: once the session returns on an error, its next send blocks.
// No buffer helps a sender that loops, so no fix is offered.
type frame struct{ Kind, Body string }

func session(conn net.Conn) {
	frames := make(chan *frame)
	errc := make(chan error, 1)
	go func() { // want `goroutine leak: the goroutine's loop sends on unbuffered frames and blocks forever once the caller stops receiving; select in the send on ctx.Done\(\) or on a done channel the caller closes when it returns`
		dec := json.NewDecoder(conn)
		for {
			var f frame
			if err := dec.Decode(&f); err != nil {
				errc <- err
				return
			}
			frames <- &f
		}
	}()
	for {
		select {
		case f := <-frames:
			log.Println("frame", f.Kind)
		case err := <-errc:
			log.Println("session:", err)
			return
		}
	}
}

// A helper that main calls at start-up, but a handler calls too: the
// handler starts a new endless goroutine per request.
func startTicker(name string) {
	go func() { // want `the goroutine's loop sleeps and repeats with no exit`
		for {
			time.Sleep(time.Minute)
			log.Println("tick", name)
		}
	}()
}

func reloadHandler(w http.ResponseWriter, r *http.Request) {
	startTicker(r.URL.Query().Get("name"))
	w.WriteHeader(http.StatusNoContent)
}

// Called only from main, but from the handler main registers: per request.
func traceRequest(path string) {
	go func() { // want `the goroutine ranges over a ticker with no way out`
		for range time.Tick(time.Second) {
			log.Println("still serving", path)
		}
	}()
}

// ---- Not reported ----

// A producer that sends exactly n parts and a caller that receives
// exactly n: leaving the counted loop skips no send.
func checksum(ctx context.Context, parts [4][]byte) int {
	sums := make(chan int)
	go func() {
		for i := 0; i < len(parts); i++ {
			sums <- len(parts[i])
		}
	}()
	total := 0
	for i := 0; i < len(parts); i++ {
		total += <-sums
	}
	return total
}

// Two workers hand a token back and forth; the caller never touches it,
// it only waits for both to finish.
func pingPong(rounds int) {
	token := make(chan int)
	done := make(chan bool, 2)
	for p := range 2 {
		go func() {
			for i := range rounds {
				if p == 0 {
					token <- i
					<-token
				} else {
					<-token
					token <- i
				}
			}
			done <- true
		}()
	}
	<-done
	<-done
}

// Start-up work reached only from main, through a helper: it lives as
// long as the program.
func startServices(c *cache) {
	startCacheSweeper(c)
}

func startCacheSweeper(c *cache) {
	go func() {
		for {
			time.Sleep(10 * time.Minute)
			c.mu.Lock()
			c.data = map[string]string{}
			c.mu.Unlock()
		}
	}()
}

// A process-wide listener started lazily, once, behind a nil check of
// the package-level channel it creates.
var (
	invalidateMu  sync.Mutex
	invalidations chan string
)

func ensureInvalidator(c *cache) {
	invalidateMu.Lock()
	defer invalidateMu.Unlock()
	if invalidations != nil {
		return
	}
	invalidations = make(chan string, 64)
	go func() {
		for key := range invalidations {
			c.mu.Lock()
			delete(c.data, key)
			c.mu.Unlock()
		}
	}()
}

// A buffer of one: the goroutine finishes whether anyone receives.
func profileBuffered(w http.ResponseWriter, r *http.Request) {
	ch := make(chan result, 1)
	go func() {
		b, err := fetch(r.Context(), "http://upstream/profile")
		ch <- result{b, err}
	}()
	select {
	case res := <-ch:
		w.Write(res.body)
	case <-r.Context().Done():
	}
}

// The send selects on ctx.Done() too.
func nameSelect(ctx context.Context, id string) (string, error) {
	names := make(chan string)
	go func() {
		n, _ := lookupUser(id)
		select {
		case names <- n:
		case <-ctx.Done():
		}
	}()
	select {
	case n := <-names:
		return n, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Every path receives the result.
func always(ctx context.Context) ([]byte, error) {
	ch := make(chan result)
	go func() {
		b, err := fetch(ctx, "http://upstream/")
		ch <- result{b, err}
	}()
	res := <-ch
	return res.body, res.err
}

// Fan-out with a buffer for every sender.
func fetchAllBuffered(ctx context.Context, urls []string) error {
	ch := make(chan error, len(urls))
	for _, u := range urls {
		go func() {
			_, err := fetch(ctx, u)
			ch <- err
		}()
	}
	for range urls {
		if err := <-ch; err != nil {
			return err
		}
	}
	return nil
}

// Fan-out that always drains every result before deciding.
func countFailures(ctx context.Context, urls []string) int {
	ch := make(chan error)
	for _, u := range urls {
		go func() {
			_, err := fetch(ctx, u)
			ch <- err
		}()
	}
	n := 0
	for range urls {
		if err := <-ch; err != nil {
			n++
		}
	}
	return n
}

// The producer closes the channel it ranges over.
func numbers(ctx context.Context, n int) []int {
	ch := make(chan int)
	go func() {
		defer close(ch)
		for i := range n {
			ch <- i
		}
	}()
	var out []int
	go func() {
		for v := range ch {
			out = append(out, v)
		}
	}()
	return out
}

// Workers over a field that Close closes.
type queue struct {
	tasks chan string
	wg    sync.WaitGroup
}

func newQueue() *queue {
	q := &queue{tasks: make(chan string)}
	q.wg.Add(1)
	go q.drain()
	return q
}

func (q *queue) drain() {
	defer q.wg.Done()
	for t := range q.tasks {
		log.Println(t)
	}
}

func (q *queue) Close() { close(q.tasks); q.wg.Wait() }

// A server-lifetime loop that ends on its quit channel.
type janitor struct {
	quit chan struct{}
}

func newJanitor() *janitor {
	j := &janitor{quit: make(chan struct{})}
	go j.run()
	return j
}

func (j *janitor) run() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			log.Println("sweep")
		case <-j.quit:
			return
		}
	}
}

// A ticker loop with a ctx.Done() case, joined by a WaitGroup.
func poll(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				log.Println("poll")
			}
		}
	}()
}

// An SSE loop that returns on a write error: a gone client ends it.
func heartbeat(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for range t.C {
		if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// An SSE loop that watches the request.
func feed(w http.ResponseWriter, r *http.Request) {
	msgs := make(chan []byte)
	for {
		select {
		case <-r.Context().Done():
			return
		case m := <-msgs:
			w.Write(m)
		}
	}
}

// A loop whose condition is the context.
func warm(ctx context.Context) {
	go func() {
		for ctx.Err() == nil {
			time.Sleep(time.Second)
		}
	}()
}

// A read loop that ends on the connection's error.
func serveConn(ctx context.Context, c net.Conn) {
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			log.Printf("read %d", n)
		}
	}()
}

// A channel handed to another package, which may close it.
func watchSignals() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	go func() {
		for s := range sigs {
			log.Println("signal", s)
		}
	}()
}

// A channel from a method: who closes it is not visible here.
type subscription interface{ C() <-chan string }

func forward(sub subscription) {
	go func() {
		for m := range sub.C() {
			log.Println(m)
		}
	}()
}

// A parameter of an exported function: the caller may close it.
func Consume(in chan string) {
	go func() {
		for m := range in {
			log.Println(m)
		}
	}()
}

// Started in main: it lives as long as the program.
func main() {
	startServices(&cache{})
	startTicker("boot")
	http.HandleFunc("/trace", func(w http.ResponseWriter, r *http.Request) {
		traceRequest(r.URL.Path)
	})
	go func() {
		for range time.Tick(time.Minute) {
			log.Println("alive")
		}
	}()
}

// A labeled break leaves the outer loop.
func drainUntilIdle(ctx context.Context, in chan int) {
	go func() {
	loop:
		for {
			select {
			case v := <-in:
				log.Println(v)
			case <-time.After(time.Second):
				break loop
			}
		}
	}()
}

// A deliberate, explained forever-goroutine is silenced.
func startReporter() {
	//leakvet:ignore process-wide reporter, started once from main
	go func() {
		for {
			time.Sleep(time.Minute)
			log.Println("report")
		}
	}()
}

// Waiting for a WaitGroup, then closing: close never blocks.
func waitAll(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A loop that exits through log.Fatal.
func mustServe(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				log.Fatal(err)
			}
			c.Close()
		}
	}()
}

// Started once, lazily, for the life of the program.
var refreshOnce sync.Once

func ensureRefresher(c *cache) {
	refreshOnce.Do(func() {
		go func() {
			for range time.Tick(time.Hour) {
				c.mu.Lock()
				c.data = nil
				c.mu.Unlock()
			}
		}()
	})
}

// A client-side function taking a request is no handler.
type retrier struct{ next http.RoundTripper }

func (t retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	for {
		resp, err := t.next.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		time.Sleep(time.Second)
	}
}
