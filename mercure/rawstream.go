package mercure

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// rawStream is an HTTP/1.1 event stream written on the hijacked
// connection. Taking the connection from net/http frees what it keeps per
// connection while a handler runs (a read buffer, two write buffers and a
// background reader goroutine): an idle subscriber then costs one
// goroutine and a few hundred bytes, and its frames go out through a write
// buffer borrowed from a pool only while a batch is being written.
//
// Nobody reads the connection any more, so the hub's clock probes it
// (Alive) to notice a client that went away without waiting for a write
// to fail: on Linux by reading a flag the kernel's hang-up report sets
// (hangups), elsewhere by a non-blocking peek.
type rawStream struct {
	conn   net.Conn
	probe  func() bool // nil: no probe on this platform or connection
	buf    *[]byte
	single []byte    // the batch's only frame so far, not copied
	armed  time.Time // the write deadline set on conn
	// unwatch stops the hang-up watch; it must run before conn closes.
	unwatch func()
}

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// rawFlushAt bounds the pooled buffer during long replays.
const rawFlushAt = 32 << 10

// hijackStream takes the connection and writes the response head itself.
// The body is delimited by closing the connection, which every SSE client
// handles, so no chunked encoding is needed. It returns nil, false when
// the connection cannot be taken, and the caller then streams through
// net/http.
func hijackStream(w http.ResponseWriter, status int, hu *hangups) (*rawStream, bool) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, false
	}
	s := &rawStream{conn: conn}
	if gone, stop, ok := hu.watch(conn); ok {
		// The kernel tells when the client leaves; Alive only reads it.
		s.probe = func() bool { return !gone.Load() }
		s.unwatch = stop
	} else {
		s.probe = newProbe(conn)
	}
	// The request had no body (GET) or it was read whole (QUERY); bytes
	// still buffered would be a pipelined request, which this connection
	// will never answer since it closes after the stream.
	_ = brw
	h := w.Header().Clone()
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	b := s.buffer()
	*b = append(*b, "HTTP/1.1 "...)
	*b = appendStatus(*b, status)
	bw := sliceWriter{b}
	_ = h.Write(bw)
	*b = append(*b, "\r\n"...)
	return s, true
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

func (s *rawStream) buffer() *[]byte {
	if s.buf == nil {
		s.buf = writeBufs.Get().(*[]byte)
	}
	return s.buf
}

// Write queues p for the next Flush. The first frame of a batch is only
// referenced, not copied: frames are shared and never modified, and a
// batch of one frame, the common case, then goes out without touching the
// buffer pool.
func (s *rawStream) Write(p []byte) (int, error) {
	if s.buf == nil && s.single == nil {
		s.single = p
		return len(p), nil
	}
	b := s.buffer()
	if s.single != nil {
		*b = append(*b, s.single...)
		s.single = nil
	}
	*b = append(*b, p...)
	if len(*b) >= rawFlushAt {
		if err := s.Flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes the buffered frames in one write and returns the buffer
// to the pool, so an idle stream holds none.
func (s *rawStream) Flush() error {
	if s.single != nil {
		p := s.single
		s.single = nil
		_, err := s.conn.Write(p)
		return err
	}
	if s.buf == nil {
		return nil
	}
	b := s.buf
	s.buf = nil
	_, err := s.conn.Write(*b)
	if cap(*b) <= 64<<10 {
		*b = (*b)[:0]
		writeBufs.Put(b)
	}
	return err
}

// SetWriteDeadline arms the connection's write deadline, lazily: a timer
// operation per batch is a measurable share of a delivery's cost, so a
// deadline that still has at least half of the requested window left is
// kept. A write is then bounded by between half the window and the whole
// of it. Lifting the deadline (the zero time) is skipped too: on a plain
// connection a passed deadline only affects writes, and a fresh one is
// armed before every batch.
func (s *rawStream) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	now := time.Now()
	if s.armed.Sub(now) >= t.Sub(now)/2 {
		return nil
	}
	s.armed = t
	return s.conn.SetWriteDeadline(t)
}

// Alive reports whether the peer may still be there: false once it closed
// or reset the connection. It never blocks.
func (s *rawStream) Alive() bool {
	if s.probe == nil {
		return true
	}
	return s.probe()
}

func (s *rawStream) Close() error {
	if s.unwatch != nil {
		s.unwatch()
	}
	if s.buf != nil {
		*s.buf = (*s.buf)[:0]
		writeBufs.Put(s.buf)
		s.buf = nil
	}
	return s.conn.Close()
}

var _ io.Writer = (*rawStream)(nil)
