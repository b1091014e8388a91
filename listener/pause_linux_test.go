package listener

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// freeFixedAddr is a loopback address with a port nobody listens on, to
// bind explicitly: a socket bound to port 0 does not pause.
func freeFixedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// connectRefused dials addr once and reports whether the kernel refused
// the connection outright (ECONNREFUSED), as for a port nobody listens on.
func connectRefused(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitFor)
	if err == nil {
		_ = c.Close()
		return false
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// An overloaded listener with OverloadPause stops listening: the kernel
// refuses new connections itself, open connections go on, nobody else can
// bind the address meanwhile, and it listens again once the server is no
// longer overloaded. With several SO_REUSEPORT sockets each pauses on its
// own.
func TestOverloadPause(t *testing.T) {
	for _, socks := range []int{1, 2} {
		t.Run(fmt.Sprintf("sockets=%d", socks), func(t *testing.T) {
			var over atomic.Bool
			addr := freeFixedAddr(t)
			s := serveAt(t, addr, Config{Overloaded: over.Load, OverloadPause: 20 * time.Millisecond, ReusePort: socks})
			held := dial(t, s.l.Addr(), "")
			served := s.accepted(t)

			over.Store(true)
			// Each socket resets the connection it accepts and pauses;
			// until all have, some dials are reset instead of refused.
			deadline := time.Now().Add(waitFor)
			for mustMetric(t, s.reg, "listener_paused_sockets") < float64(socks) {
				if time.Now().After(deadline) {
					t.Fatalf("paused sockets %v, want %d", mustMetric(t, s.reg, "listener_paused_sockets"), socks)
				}
				if c, err := net.DialTimeout("tcp", addr, waitFor); err == nil {
					mustRefused(t, c)
					_ = c.Close()
				}
			}
			for i := range 5 {
				if !connectRefused(t, addr) {
					t.Fatalf("dial %d while paused was not refused by the kernel", i)
				}
			}
			if ln, err := net.Listen("tcp", addr); err == nil {
				_ = ln.Close()
				t.Fatal("another socket bound the paused address")
			}
			// The connection admitted before the pause still works.
			if _, err := held.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			var b [1]byte
			_ = served.SetReadDeadline(time.Now().Add(waitFor))
			if _, err := served.Read(b[:]); err != nil || b[0] != 'x' {
				t.Fatalf("read on the connection admitted before the pause: %v %q", err, b)
			}

			over.Store(false)
			eventually(t, "listening again", func() bool { return mustMetric(t, s.reg, "listener_paused_sockets") == 0 })
			for range 2 * socks { // the kernel spreads them over the sockets
				dial(t, s.l.Addr(), "")
				s.accepted(t)
			}
			if got := mustMetric(t, s.reg, "listener_overload_pauses_total"); got != float64(socks) {
				t.Fatalf("overload_pauses_total = %v, want %d", got, socks)
			}
			if got := mustMetric(t, s.reg, "listener_overload_paused_seconds_total"); got <= 0 {
				t.Fatalf("overload_paused_seconds_total = %v", got)
			}
			if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "overload"); got < float64(socks) {
				t.Fatalf("refused{overload} = %v, want at least %d", got, socks)
			}
		})
	}
}

// The connections waiting in the accept queue when a socket pauses are
// reset by the kernel, and counted as refused.
func TestOverloadPauseResetsTheQueue(t *testing.T) {
	var over atomic.Bool
	addr := freeFixedAddr(t)
	reg := prometheus.NewRegistry()
	l := listenAt(t, addr, Config{Overloaded: over.Load, OverloadPause: 20 * time.Millisecond, Registerer: reg})
	queued := []net.Conn{dial(t, l.Addr(), ""), dial(t, l.Addr(), ""), dial(t, l.Addr(), "")}
	eventually(t, "three in the accept queue", func() bool {
		q, err := l.AcceptQueues()
		return err == nil && len(q) == 1 && q[0].Len == 3
	})
	over.Store(true)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	for _, c := range queued {
		mustRefused(t, c)
	}
	eventually(t, "paused", func() bool { return mustMetric(t, reg, "listener_paused_sockets") == 1 })
	if got := mustMetric(t, reg, "listener_refused_total", "reason", "overload"); got != 3 {
		t.Fatalf("refused{overload} = %v, want 3: the one accepted and the two reset in the queue", got)
	}
	over.Store(false)
	eventually(t, "listening again", func() bool { return mustMetric(t, reg, "listener_paused_sockets") == 0 })
	dial(t, l.Addr(), "")
	select {
	case c, ok := <-accepted:
		if !ok {
			t.Fatal("Accept failed after the pause")
		}
		_ = c.Close()
	case <-time.After(waitFor):
		t.Fatal("nothing accepted after the pause")
	}
}

// Close ends a pause at once: Accept returns net.ErrClosed.
func TestCloseDuringOverloadPause(t *testing.T) {
	addr := freeFixedAddr(t)
	reg := prometheus.NewRegistry()
	l := listenAt(t, addr, Config{Overloaded: func() bool { return true }, OverloadPause: time.Hour, Registerer: reg})
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	dial(t, l.Addr(), "")
	eventually(t, "paused", func() bool { return mustMetric(t, reg, "listener_paused_sockets") == 1 })
	_ = l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close during a pause: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Accept still blocked after Close")
	}
}

// A socket bound to port 0 would get another port if it listened again,
// so it never pauses: it resets connections one by one.
func TestNoOverloadPauseOnAnAutoPort(t *testing.T) {
	s := serve(t, Config{Overloaded: func() bool { return true }, OverloadPause: 20 * time.Millisecond})
	for range 3 {
		mustRefused(t, dial(t, s.l.Addr(), ""))
	}
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "overload"); got != 3 {
		t.Fatalf("refused{overload} = %v, want 3", got)
	}
	if got := mustMetric(t, s.reg, "listener_overload_pauses_total"); got != 0 {
		t.Fatalf("overload_pauses_total = %v, want 0", got)
	}
}

// After a pause a socket admits rampStart connections in its first
// interval, then stops listening until the interval ends, and admits
// again after.
func TestRampAfterOverloadPause(t *testing.T) {
	var over atomic.Bool
	addr := freeFixedAddr(t)
	const pause = 2 * time.Second // far longer than rampStart+1 loopback dials take
	s := serveAt(t, addr, Config{Overloaded: over.Load, OverloadPause: pause})
	over.Store(true)
	if c, err := net.DialTimeout("tcp", addr, waitFor); err == nil {
		mustRefused(t, c)
	}
	eventually(t, "paused", func() bool { return mustMetric(t, s.reg, "listener_paused_sockets") == 1 })
	over.Store(false)
	eventually(t, "listening again", func() bool { return mustMetric(t, s.reg, "listener_paused_sockets") == 0 })
	for range rampStart {
		dial(t, s.l.Addr(), "")
		s.accepted(t)
	}
	// The next one finds the socket closed (or, if it came in the instant
	// before, is reset with the accept queue).
	c, err := net.DialTimeout("tcp", addr, waitFor)
	if err == nil {
		mustRefused(t, c)
		_ = c.Close()
	} else if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	eventually(t, "listening after the interval", func() bool { return mustMetric(t, s.reg, "listener_paused_sockets") == 0 })
	dial(t, s.l.Addr(), "")
	s.accepted(t)
	if got := mustMetric(t, s.reg, "listener_overload_pauses_total"); got != 2 {
		t.Fatalf("overload_pauses_total = %v, want 2: the overload and the ramp's hold", got)
	}
}
