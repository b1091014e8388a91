// Package stream carries Server-Sent Event streams over HTTP from the
// request that opens one to the close of its connection: HTTP/1.1 streams
// on connections taken over from net/http (Conn), the others inside
// net/http (Response), both counted by a Tracker whose gate closes at
// shutdown.
package stream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-hub/herald/hub"
)

// CloseTimeout bounds the writes of every tracked stream once shutdown has
// begun, and is the deadline a stream's closing words should carry: a
// client that stopped reading holds a shutdown for this long at most.
const CloseTimeout = time.Second

// Conn is an HTTP/1.1 event stream written on a connection taken over from
// net/http. Taking the connection frees what net/http keeps per connection
// while a handler runs (a read buffer, two write buffers, a background
// reader goroutine and the handler's deep stack): an idle stream then
// costs one goroutine and a few hundred bytes, and its frames go out
// through a write buffer borrowed from a pool only while a batch is being
// written.
//
// Nobody reads the connection any more, so the hub probes it (Alive) to
// notice a client that went away without waiting for a write to fail: on
// Linux by reading a flag the kernel's hang-up report sets, elsewhere by a
// non-blocking peek.
//
// Write, Flush, SetWriteDeadline and Close belong to one goroutine, the
// stream's writer; Alive may be called from any. The Tracker may shorten
// the deadline and close the connection concurrently at shutdown.
type Conn struct {
	conn net.Conn
	// tls is conn when it is a TLS connection: a write that times out
	// leaves its state corrupt, so its deadline is armed exactly, never
	// early, and a stream that ends badly closes the socket beneath
	// rather than send a close_notify under a deadline of its own.
	tls     *tls.Conn
	probe   func() bool // nil: no probe on this platform or connection
	unwatch func()      // stops the hang-up watch; runs before conn closes

	// The writer's alone.
	buf      *[]byte
	single   []byte    // the batch's only frame so far, not copied
	deadline time.Time // as set by SetWriteDeadline
	begun    time.Time // when the batch's first Write checked the deadline

	// limit is the tracker's bound on every write (unix nanoseconds, 0:
	// none). It is stored under mu and read without it on the Write path.
	limit atomic.Int64

	mu     sync.Mutex // armed and closed; shared with the tracker
	armed  time.Time  // the write deadline set on conn
	closed bool
	failed bool // a write failed: the peer is not reading (writer's, read by Close)
}

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// flushAt bounds the pooled buffer during long replays.
const flushAt = 32 << 10

// slack is how much earlier than the deadline the connection's armed
// deadline may stay, as a fraction of the time left (1/slack): setting
// and lifting the connection's deadline on every batch costs about twice
// what the whole deadline handling costs here (BenchmarkBatch/nowrite),
// and under the hub's write timeout the armed one is kept for all but a
// few batches per quarter of it. A write that blocks is then cut off after
// at least (slack-1)/slack of the time it had when its batch began, never
// after its deadline.
const slack = 4

// Hijack takes over the connection of w, counted by k, and writes the
// response head with status and w's header fields. The body is delimited
// by closing the connection, which every SSE client handles, so no chunked
// encoding is needed. An error means the connection could not be taken
// and nothing was written: stream through net/http instead (Response).
func (k *Ticket) Hijack(w http.ResponseWriter, status int) (*Conn, error) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("take the connection: %w", err)
	}
	// The request had no body (GET) or it was read whole (QUERY); bytes
	// still buffered would be a pipelined request, which this connection
	// will never answer since it closes after the stream.
	c := &Conn{conn: conn}
	c.tls, _ = conn.(*tls.Conn)
	if gone, stop, ok := k.t.hangups.watch(k.t, conn); ok {
		// The kernel tells when the client leaves; Alive only reads it.
		c.probe = func() bool { return !gone.Load() }
		c.unwatch = stop
	} else {
		c.probe = newProbe(conn)
	}
	h := w.Header().Clone()
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	b := c.buffer()
	*b = append(*b, "HTTP/1.1 "...)
	*b = appendStatus(*b, status)
	_ = h.Write(sliceWriter{b})
	*b = append(*b, "\r\n"...)
	k.t.register(k, c)
	return c, nil
}

func appendStatus(b []byte, status int) []byte {
	b = append(b, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10), ' ')
	b = append(b, http.StatusText(status)...)
	return append(b, "\r\n"...)
}

type sliceWriter struct{ b *[]byte }

func (w sliceWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

func (c *Conn) buffer() *[]byte {
	if c.buf == nil {
		c.buf = writeBufs.Get().(*[]byte)
	}
	return c.buf
}

// Write queues p for the next Flush. The first frame of a batch is only
// referenced, not copied: frames are shared and never modified, and a
// batch of one frame, the common case, then goes out without touching the
// buffer pool. The caller must not modify p before the Flush.
//
// The first Write of a batch fails with os.ErrDeadlineExceeded once the
// write deadline has passed; the frames queued behind it share its fate
// at the Flush, which never sends after the deadline. Checking the clock
// for every frame would cost more than copying it.
func (c *Conn) Write(p []byte) (int, error) {
	if c.buf == nil && c.single == nil {
		c.begun = time.Time{}
		if dl := c.effective(); !dl.IsZero() {
			now := time.Now()
			if !now.Before(dl) {
				return 0, os.ErrDeadlineExceeded
			}
			c.begun = now
		}
		c.single = p
		return len(p), nil
	}
	b := c.buffer()
	if c.single != nil {
		*b = append(*b, c.single...)
		c.single = nil
	}
	*b = append(*b, p...)
	if len(*b) >= flushAt {
		if err := c.Flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes what was queued in one write and returns the buffer to the
// pool, so an idle stream holds none. It fails with os.ErrDeadlineExceeded
// once the write deadline has passed, and the queued frames are then
// dropped.
func (c *Conn) Flush() error {
	var p []byte
	switch {
	case c.single != nil:
		p = c.single
	case c.buf != nil:
		p = *c.buf
	default:
		if c.expired() {
			return os.ErrDeadlineExceeded
		}
		return nil
	}
	err := c.ready(c.begun)
	if err == nil {
		var n int
		n, err = c.conn.Write(p)
		if errors.Is(err, os.ErrDeadlineExceeded) && c.tls == nil {
			err = c.resume(p[n:])
		}
	}
	if err != nil {
		c.failed = true
	}
	c.single = nil
	c.release()
	return err
}

// resume finishes a write that the connection's deadline cut short while
// the stream's own deadline has not passed: the armed deadline may come up
// to 1/slack of the time left before it (see ready), which must not fail a
// batch that its deadline still allows. It arms the stream's deadline and
// writes the rest; only this error path pays for the clock reading.
func (c *Conn) resume(rest []byte) error {
	c.mu.Lock()
	dl := c.effective()
	if dl.IsZero() || !time.Now().Before(dl) || c.closed {
		c.mu.Unlock()
		return os.ErrDeadlineExceeded
	}
	c.armed = dl
	err := c.conn.SetWriteDeadline(dl)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = c.conn.Write(rest)
	return err
}

func (c *Conn) release() {
	if c.buf == nil {
		return
	}
	if cap(*c.buf) <= 64<<10 {
		*c.buf = (*c.buf)[:0]
		writeBufs.Put(c.buf)
	}
	c.buf = nil
}

// SetWriteDeadline sets the deadline of the writes and flushes that
// follow, as net.Conn's does: after it they fail with
// os.ErrDeadlineExceeded, a write blocked when it passes fails then, and
// the zero time lifts it. The connection's own deadline is fitted lazily,
// before the next write to it: an earlier deadline is armed then, a later
// one only once the armed one falls more than 1/slack of the time left
// (when the batch began) short of it, and lifting it costs nothing until
// a write without a deadline comes. So the connection's deadline is never
// later than the one set: past it, the connection fails the write itself.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.deadline = t
	return nil
}

// effective returns the deadline in force: the one set, or the tracker's
// limit when that comes first.
func (c *Conn) effective() time.Time {
	dl := c.deadline
	if l := c.limit.Load(); l != 0 {
		if lt := time.Unix(0, l); dl.IsZero() || lt.Before(dl) {
			dl = lt
		}
	}
	return dl
}

func (c *Conn) expired() bool {
	dl := c.effective()
	return !dl.IsZero() && !time.Now().Before(dl)
}

// ready fits the connection's write deadline to the stream's before a
// write to the connection: never later than the stream's, and not much
// earlier. now is when the batch began, or zero to read the clock; one
// clock reading per batch is all the deadline costs, since the armed
// deadline, never later than the stream's, fails a write that comes after
// it.
func (c *Conn) ready(now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	dl := c.effective()
	if dl.IsZero() {
		if c.armed.IsZero() {
			return nil
		}
		c.armed = time.Time{}
		return c.conn.SetWriteDeadline(c.armed)
	}
	if now.IsZero() {
		now = time.Now()
	}
	left := dl.Sub(now)
	if left <= 0 {
		return os.ErrDeadlineExceeded
	}
	if c.armed.Equal(dl) || c.tls == nil && !c.armed.IsZero() && !dl.Before(c.armed) && dl.Sub(c.armed) <= left/slack {
		return nil
	}
	c.armed = dl
	return c.conn.SetWriteDeadline(dl)
}

// cut bounds every write from now on, the one in flight included, by t.
// It may be called from any goroutine.
func (c *Conn) cut(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if l := c.limit.Load(); l != 0 && l <= t.UnixNano() {
		return
	}
	c.limit.Store(t.UnixNano())
	if c.armed.IsZero() || t.Before(c.armed) {
		c.armed = t
		_ = c.conn.SetWriteDeadline(t)
	}
}

// abort closes the connection, failing a write in flight. It may be
// called from any goroutine; the writer still calls Close.
func (c *Conn) abort() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.closeConn(true)
}

// closeConn closes the connection. hard skips TLS's close_notify, which
// crypto/tls sends under a 5 s deadline of its own: a stream cut short
// by shutdown or by a peer that stopped reading ends when its socket
// closes, and must not hold a shutdown longer than CloseTimeout.
func (c *Conn) closeConn(hard bool) error {
	if c.unwatch != nil {
		c.unwatch()
	}
	if hard && c.tls != nil {
		return c.tls.NetConn().Close()
	}
	return c.conn.Close()
}

// Alive reports whether the peer may still be there: false once it closed
// or reset the connection. It never blocks.
func (c *Conn) Alive() bool {
	if c.probe == nil {
		return true
	}
	return c.probe()
}

// Close drops what is queued and closes the connection. It is safe to
// call more than once.
func (c *Conn) Close() error {
	c.single = nil
	c.release()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	return c.closeConn(c.failed || c.limit.Load() != 0)
}

// end is the tracker's release of the stream: a taken connection must
// not outlive its ticket.
func (c *Conn) end() { _ = c.Close() }

var (
	_ hub.Stream = (*Conn)(nil)
	_ hub.Prober = (*Conn)(nil)
)
