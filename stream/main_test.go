package stream

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialPair returns both ends of a loopback TCP connection.
func dialPair(t testing.TB, ln net.Listener) (client *net.TCPConn, server net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s
}

// waitUntil polls cond until it holds, failing the test after a while.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func contextWithTimeout(t testing.TB, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}

// countingConn counts the write deadlines set on a connection: each is a
// timer operation in the runtime.
type countingConn struct {
	net.Conn
	mu    sync.Mutex
	calls int
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// drain reads r until it fails, counting bytes, and reports the count when
// it ends.
func drain(r net.Conn) <-chan int {
	done := make(chan int, 1)
	go func() {
		n := 0
		var b [32 << 10]byte
		for {
			m, err := r.Read(b[:])
			n += m
			if err != nil {
				done <- n
				return
			}
		}
	}()
	return done
}
