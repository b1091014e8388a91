package stream

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/herald-hub/herald/hub"
)

// Response is an event stream written through net/http: HTTP/2 streams,
// and HTTP/1.1 ones whose connection is not taken over. Its deadlines are
// net/http's (http.ResponseController), which a shutdown may shorten.
//
// Write, Flush, SetWriteDeadline and Close belong to the handler's
// goroutine; the Tracker may shorten the deadline concurrently at
// shutdown, until Close.
type Response struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	mu    sync.Mutex // set, limit and done; shared with the tracker
	set   time.Time  // the deadline given to rc
	limit time.Time  // the tracker's bound on every write; zero: none
	done  bool       // the handler is finishing: rc must not be touched
}

// Write writes p to the response.
func (r *Response) Write(p []byte) (int, error) { return r.w.Write(p) }

// Flush sends what was written.
func (r *Response) Flush() error { return r.rc.Flush() }

// SetWriteDeadline sets the deadline of the writes and flushes that
// follow; the zero time lifts it. A shutdown's bound wins over a later
// deadline.
func (r *Response) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.limit.IsZero() && (t.IsZero() || r.limit.Before(t)) {
		t = r.limit
	}
	return r.setLocked(t)
}

func (r *Response) setLocked(t time.Time) error {
	r.set = t
	if err := r.rc.SetWriteDeadline(t); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// Close ends the tracker's hold on the response; it must be called before
// the handler returns (releasing the ticket does it), since net/http's
// response writers must not be used after that. It is safe to call more
// than once.
func (r *Response) Close() error {
	r.mu.Lock()
	r.done = true
	r.mu.Unlock()
	return nil
}

func (r *Response) cut(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || (!r.limit.IsZero() && !t.Before(r.limit)) {
		return
	}
	r.limit = t
	if r.set.IsZero() || t.Before(r.set) {
		_ = r.setLocked(t)
	}
}

// abort does nothing: closing the http.Server closes what is left.
func (r *Response) abort() {}

func (r *Response) end() { _ = r.Close() }

var _ hub.Stream = (*Response)(nil)
