package ctxguard

import (
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// watch finds the tracked goroutines still running LateAfter after their
// root ended. It runs off one timer for the whole guard, not one per
// goroutine or per request: an ended root with goroutines still running
// joins a queue, due LateAfter later, and since LateAfter is the same for
// all and a root's due time is taken under the queue's lock, the queue is
// in due order and the timer only ever waits for its head. A root leaves
// the queue when its last goroutine exits, and the timer is stopped or
// moved on then, so with no late goroutine it never fires and no
// goroutine of the watch exists; when it does fire, the report runs on
// the timer's own goroutine, which Close waits for.
//
// A root is queued at most once. When its turn comes, the goroutines
// started up to the moment it was queued are reported (each once); any
// started after that (after the request ended) are given a turn of their
// own, so every goroutine runs at least LateAfter past both its start and
// its request's end before it is reported, and at most twice that.
type watch struct {
	g *Guard

	mu         sync.Mutex
	head, tail *root
	timer      *time.Timer
	armed      bool // timer may be pending
	closed     bool
	fires      int // times the timer went off, for the tests
	reports    sync.WaitGroup
}

// enqueue gives an ended root a turn, unless it has one. rt.mu is held.
func (w *watch) enqueue(rt *root) {
	if w.g.lateAfter < 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || rt.queued {
		return
	}
	rt.queued = true
	rt.due = time.Now().Add(w.g.lateAfter)
	rt.dueSeq = rt.seq
	rt.prev, rt.next = w.tail, nil
	if w.tail != nil {
		w.tail.next = rt
	} else {
		w.head = rt
	}
	w.tail = rt
	if w.head == rt {
		w.arm()
	}
}

// dequeue takes a root whose goroutines have all exited out of the queue.
// rt.mu is held.
func (w *watch) dequeue(rt *root) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !rt.queued {
		return
	}
	wasHead := w.head == rt
	w.unlink(rt)
	if wasHead {
		w.arm()
	}
}

func (w *watch) unlink(rt *root) {
	if rt.prev != nil {
		rt.prev.next = rt.next
	} else {
		w.head = rt.next
	}
	if rt.next != nil {
		rt.next.prev = rt.prev
	} else {
		w.tail = rt.prev
	}
	rt.prev, rt.next, rt.queued = nil, nil, false
}

// arm sets the timer for the head of the queue, or stops it when the queue
// is empty. w.mu is held.
func (w *watch) arm() {
	if w.head == nil {
		if w.armed {
			w.timer.Stop()
			w.armed = false
		}
		return
	}
	d := time.Until(w.head.due)
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fire)
	} else {
		w.timer.Reset(d)
	}
	w.armed = true
}

// lateRoot is a root whose turn came, with the last goroutine it covers.
type lateRoot struct {
	rt  *root
	seq uint64
}

func (w *watch) fire() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.fires++
	w.reports.Add(1)
	defer w.reports.Done()
	now := time.Now()
	var due []lateRoot
	for w.head != nil && !w.head.due.After(now) {
		rt := w.head
		due = append(due, lateRoot{rt, rt.dueSeq})
		w.unlink(rt)
	}
	w.arm()
	w.mu.Unlock()
	for _, d := range due {
		w.report(d.rt, d.seq, now)
	}
}

// report logs and counts the goroutines of rt up to seq that have not been
// reported yet, and queues the root again for those started later.
func (w *watch) report(rt *root, seq uint64, now time.Time) {
	rt.mu.Lock()
	var late []*goroutine
	rest := false
	for gr := rt.first; gr != nil; gr = gr.next {
		switch {
		case gr.reported:
		case gr.seq <= seq:
			gr.reported = true
			late = append(late, gr)
		default:
			rest = true
		}
	}
	if rest {
		w.enqueue(rt)
	}
	s, since := rt.s, now.Sub(rt.endedAt)
	rt.mu.Unlock()
	// Oldest first: the list runs newest first.
	for i := len(late) - 1; i >= 0; i-- {
		s.late.Inc()
		w.g.logLate(rt, late[i], s.name, since)
	}
}

// close stops the timer, forgets the queue and waits for a report under
// way.
func (w *watch) close() {
	w.mu.Lock()
	w.closed = true
	for w.head != nil {
		w.unlink(w.head)
	}
	w.arm()
	w.mu.Unlock()
	w.reports.Wait()
}

// logLate writes the report of one late goroutine. The request's context
// goes to the handler, which may take a trace ID from it.
func (g *Guard) logLate(rt *root, gr *goroutine, name string, since time.Duration) {
	n := 0
	for n < len(gr.pcs) && gr.pcs[n] != 0 {
		n++
	}
	frames := runtime.CallersFrames(gr.pcs[:n])
	site, _ := frames.Next()
	attrs := []slog.Attr{
		slog.String("root", name),
		slog.String("site", site.File+":"+strconv.Itoa(site.Line)),
		slog.String("func", site.Function),
		slog.String("goroutine", funcName(gr.fn)),
		slog.Duration("since_end", since),
	}
	var callers []string
	for {
		f, more := frames.Next()
		if f.Function != "" {
			callers = append(callers, f.Function+" "+f.File+":"+strconv.Itoa(f.Line))
		}
		if !more {
			break
		}
	}
	if len(callers) > 0 {
		attrs = append(attrs, slog.Any("callers", callers))
	}
	g.log.LogAttrs(rt, slog.LevelWarn, "goroutine still running after its request ended", attrs...)
}

func funcName(pc uintptr) string {
	if f := runtime.FuncForPC(pc); f != nil {
		return f.Name()
	}
	return ""
}
