// Package drops holds worker pools, middleware and SSE loops whose
// non-blocking selects drop an error or a done signal, or only look like
// they do.
package drops

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

type event struct{ id, data string }

func fetch(ctx context.Context, url string) error { return nil }

func process(ctx context.Context, j job) error { return nil }

type job struct{ id int }

// ---- Reported ----

// A fan-out that peeks at its workers' errors and throws the first away.
func fanOut(ctx context.Context, urls []string) {
	errc := make(chan error, len(urls))
	for _, u := range urls {
		go func() { errc <- fetch(ctx, u) }()
	}
	select {
	case <-errc: // want `error received from errc is dropped in a select with default; handle the error received from errc \(return or log it\)`
	default:
	}
}

// The error is named, then only blanked to please the compiler.
func pollWorker(errc <-chan error) {
	select {
	case err := <-errc: // want `error received from errc is dropped`
		_ = err
	default:
	}
}

// A supervisor loop that skips over worker errors.
func supervise(ctx context.Context, errs chan error, tick <-chan time.Time) {
	for range tick {
		select {
		case err := <-errs: // want `error received from errs is dropped`
			_ = err
			continue
		default:
		}
		log.Print("supervisor: tick")
	}
}

// Results carry an error; dropping the result drops the error.
type result struct {
	n   int
	err error
}

func collect(results chan result) int {
	total := 0
	select {
	case <-results: // want `error received from results is dropped`
	default:
	}
	return total
}

// A pool that clears its error channel from a struct field.
type pool struct {
	errs    chan error
	jobs    chan job
	quit    chan struct{}
	wg      sync.WaitGroup
	dropped atomic.Int64
}

func (p *pool) reset() {
	select {
	case <-p.errs: // want `error received from p.errs is dropped`
	default:
	}
}

// Middleware that checks a background validation without reading it.
func validate(next http.Handler, check func(*http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errc := make(chan error, 1)
		go func() { errc <- check(r) }()
		next.ServeHTTP(w, r)
		select {
		case _ = <-errc: // want `error received from errc is dropped`
		default:
		}
	})
}

// A channel of a concrete error type is a channel of errors too.
type ParseError struct{ Line int }

func (e *ParseError) Error() string { return fmt.Sprintf("line %d", e.Line) }

func parsed(perrs chan *ParseError) {
	select {
	case <-perrs: // want `error received from perrs is dropped`
	default:
	}
}

// A worker reports failure on an unbuffered channel: when the collector
// is busy, the error is gone.
func startWorkers(ctx context.Context, jobs <-chan job) <-chan error {
	errc := make(chan error)
	for range 4 {
		go func() {
			for j := range jobs {
				if err := process(ctx, j); err != nil {
					select {
					case errc <- err: // want `error sent on unbuffered errc is lost when no receiver is ready \(the select has a default\); make errc buffered or block on the send with a ctx.Done\(\) case`
					default:
					}
				}
			}
		}()
	}
	return errc
}

// The pool's error channel is made unbuffered in its constructor.
func newPool() *pool {
	return &pool{errs: make(chan error), jobs: make(chan job, 16), quit: make(chan struct{})}
}

func (p *pool) fail(err error) {
	select {
	case p.errs <- err: // want `error sent on unbuffered p.errs is lost`
	default:
	}
}

// A helper that sends on the channel handed to it; every caller hands
// an unbuffered one.
func notifyErr(errc chan<- error, err error) {
	select {
	case errc <- fmt.Errorf("notify: %w", err): // want `error sent on unbuffered errc is lost`
	default:
	}
}

func runNotify(ctx context.Context) error {
	errc := make(chan error)
	go notifyErr(errc, fetch(ctx, "/a"))
	return <-errc
}

// A goroutine given the channel as an argument.
func serveAll(srvs []*http.Server) error {
	errc := make(chan error, 0)
	for _, s := range srvs {
		go func(errc chan<- error) {
			if err := s.ListenAndServe(); err != nil {
				select {
				case errc <- err: // want `error sent on unbuffered errc is lost`
				default:
					return
				}
			}
		}(errc)
	}
	return <-errc
}

// An SSE loop that polls the request's context and ignores it: the
// stream keeps writing after the client left.
func events(w http.ResponseWriter, r *http.Request) {
	f, _ := w.(http.Flusher)
	for {
		select {
		case <-r.Context().Done(): // want `r.Context\(\).Done\(\) is observed and ignored in a select with default, so the loop keeps running; return \(or break the loop\) when r.Context\(\) is done`
		default:
		}
		fmt.Fprintf(w, "data: %d\n\n", time.Now().Unix())
		f.Flush()
		time.Sleep(time.Second)
	}
}

// A worker whose quit channel is looked at and forgotten.
func (p *pool) loop() {
	defer p.wg.Done()
	for {
		select {
		case <-p.quit: // want `p.quit is observed and ignored .* when p.quit fires`
		default:
		}
		p.step()
	}
}

func (p *pool) step() {}

// break only leaves the select, not the loop.
func stream(ctx context.Context, w http.ResponseWriter, next func() event) {
	for {
		select {
		case <-ctx.Done(): // want `this break only leaves the select`
			break
		default:
		}
		ev := next()
		fmt.Fprintf(w, "id: %s\ndata: %s\n\n", ev.id, ev.data)
	}
}

// An endless poller that spins once stop is closed.
func poller(stop chan struct{}, poll func()) {
	for {
		select {
		case <-stop: // want `stop is observed and ignored`
		default:
			poll()
		}
	}
}

// Broadcasting to subscribers keeps going after cancellation.
func broadcast(ctx context.Context, subs []chan<- event, ev event) {
	for _, s := range subs {
		select {
		case <-ctx.Done(): // want `ctx.Done\(\) is observed and ignored`
		default:
		}
		s <- ev
	}
}

// A directive without a reason silences nothing.
func careless(errc chan error) {
	select {
	//leakvet:ignore
	case <-errc: // want `needs a reason`
	default:
	}
}

// ---- Not reported ----

// The received error is returned.
func firstFailure(errc <-chan error) error {
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// The error is checked and logged.
func logFailure(errc <-chan error) {
	select {
	case err := <-errc:
		if err != nil {
			log.Printf("worker: %v", err)
		}
	default:
	}
}

// Assigned to a variable of the enclosing function.
func lastError(errc <-chan error) (err error) {
	select {
	case err = <-errc:
	default:
	}
	return err
}

// Stored in a field for later.
type conn struct {
	errs    chan error
	lastErr error
}

func (c *conn) poll() {
	select {
	case c.lastErr = <-c.errs:
	default:
	}
}

// Gathered and wrapped.
func gather(errc <-chan error, n int) error {
	var errs []error
	for range n {
		select {
		case err := <-errc:
			errs = append(errs, fmt.Errorf("gather: %w", err))
		default:
		}
	}
	return errors.Join(errs...)
}

// The arrival of an error stops the handler: that is acting on it.
func stopOnError(errc <-chan error, cancel context.CancelFunc) {
	select {
	case <-errc:
		cancel()
		return
	default:
	}
}

// A drain loop on a channel of frames, not of errors.
func drain(ch chan []byte) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// The classic non-blocking cancellation check.
func step(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
	}
	return nil
}

// No default: the select blocks.
func wait(ctx context.Context, errc <-chan error) {
	select {
	case <-errc:
	case <-ctx.Done():
	}
}

// The first error wins and the rest are dropped, on purpose.
func firstWins(ctx context.Context, urls []string) error {
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for _, u := range urls {
		wg.Go(func() {
			if err := fetch(ctx, u); err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// The default counts what it drops.
func (p *pool) failCounted(err error) {
	select {
	case p.errs <- err:
	default:
		p.dropped.Add(1)
	}
}

// The default logs what it drops.
func (p *pool) failLogged(err error) {
	select {
	case p.errs <- err:
	default:
		log.Printf("pool: dropped %v", err)
	}
}

// A capacity that is not a constant.
func sized(n int, err error) {
	errc := make(chan error, n)
	select {
	case errc <- err:
	default:
	}
}

// An exported function's channel comes from callers we cannot see.
func Report(errc chan<- error, err error) {
	select {
	case errc <- err:
	default:
	}
}

// A helper whose callers hand it a buffered channel.
func relay(errc chan<- error, err error) {
	select {
	case errc <- err:
	default:
	}
}

func runRelay(ctx context.Context) error {
	errc := make(chan error, 1)
	relay(errc, fetch(ctx, "/b"))
	return <-errc
}

// A helper used as a function value has callers we cannot see.
func warn(errc chan<- error, err error) {
	select {
	case errc <- err:
	default:
	}
}

var onWarn = warn

func runWarn() {
	errc := make(chan error)
	warn(errc, errors.New("slow"))
}

// Close once: the empty case means "already closed".
func (p *pool) Close() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	p.wg.Wait()
}

// The same idiom over many workers.
func closeAll(stops []chan struct{}) {
	for _, s := range stops {
		select {
		case <-s:
		default:
			close(s)
		}
	}
}

// The loop checks the context right after the select.
func retry(ctx context.Context, try func() error) error {
	for {
		select {
		case <-ctx.Done():
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if try() == nil {
			return nil
		}
	}
}

// An empty case with a comment records a decision.
func (p *pool) flushAll(flush func() bool) {
	for flush() {
		select {
		case <-p.quit:
			// Close waits for the buffer to empty: keep flushing.
		default:
		}
	}
}

// An SSE loop that leaves when the client goes away.
func liveEvents(w http.ResponseWriter, r *http.Request, next func() event) {
	rc := http.NewResponseController(w)
	for {
		select {
		case <-r.Context().Done():
			return
		default:
		}
		ev := next()
		fmt.Fprintf(w, "data: %s\n\n", ev.data)
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// Skipping the remaining work of a bounded batch once cancelled is acting
// on the signal.
func batch(ctx context.Context, jobs []job) {
	for _, j := range jobs {
		select {
		case <-ctx.Done():
		default:
			_ = process(ctx, j)
		}
	}
}

// A wake-up notification, not an error.
type subscriber struct{ wake chan struct{} }

func (s *subscriber) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Leaving the loop from the done case.
func consume(done <-chan struct{}, in <-chan event, out func(event)) {
loop:
	for {
		select {
		case <-done:
			break loop
		case ev := <-in:
			out(ev)
		default:
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// The default continues, so the code after the select runs only on done.
func spinUntilDone(ctx context.Context, work func()) {
	for {
		select {
		case <-ctx.Done():
		default:
			work()
			continue
		}
		log.Print("spin: done")
		return
	}
}

// A loop that does nothing but poll measures the select itself.
func benchPoll(ctx context.Context, n int) {
	for i := 0; i < n; i++ {
		select {
		case <-ctx.Done():
		default:
		}
	}
}

// A channel named done that carries values, not a signal of its own.
func drainDone(done chan int) {
	for {
		select {
		case <-done:
		default:
		}
		time.Sleep(time.Millisecond)
	}
}

// A deliberate, explained drop is silenced.
func bestEffort(errc chan error) {
	select {
	case <-errc: //leakvet:ignore stale errors from the previous attempt are meaningless
	default:
	}
}
