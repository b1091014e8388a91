package listener

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// acceptAll accepts from l until it is closed, into the returned channel.
func acceptAll(l *Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1024)
	go func() {
		defer close(ch)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	return ch
}

// closedClients counts the client ends whose server end was closed. The
// read deadline is already past, so a pipe still open fails at once
// without moving the bubble's clock.
func closedClients(t *testing.T, clients []net.Conn) int {
	t.Helper()
	n := 0
	for _, c := range clients {
		_ = c.SetReadDeadline(time.Now())
		var b [1]byte
		_, err := c.Read(b[:])
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe):
			n++
		case errors.Is(err, os.ErrDeadlineExceeded):
		default:
			t.Fatalf("client read: %v", err)
		}
	}
	return n
}

// TestRateAndBurstInFakeTime drives the token bucket with synctest's
// clock: rate.Limiter reads time.Now, which the bubble controls, so the
// refill is exact.
func TestRateAndBurstInFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		l, err := Wrap(f, Config{Rate: 10, Burst: 3})
		if err != nil {
			t.Fatal(err)
		}
		got := acceptAll(l)
		burst := func(n int) (admitted, refused int) {
			var cs []net.Conn
			for range n {
				cs = append(cs, f.pipe())
			}
			synctest.Wait()
			refused = closedClients(t, cs)
			admitted = len(got)
			for range admitted {
				_ = (<-got).Close()
			}
			return admitted, refused
		}
		// A full bucket lets Burst through at once.
		if a, r := burst(5); a != 3 || r != 2 {
			t.Fatalf("first burst: %d admitted, %d refused; want 3, 2", a, r)
		}
		// One token comes back every 100 ms.
		time.Sleep(100 * time.Millisecond)
		if a, r := burst(2); a != 1 || r != 1 {
			t.Fatalf("after 100 ms: %d admitted, %d refused; want 1, 1", a, r)
		}
		time.Sleep(99 * time.Millisecond)
		if a, r := burst(1); a != 0 || r != 1 {
			t.Fatalf("after 99 ms: %d admitted, %d refused; want 0, 1", a, r)
		}
		// A long pause refills the bucket to Burst, no more.
		time.Sleep(time.Hour)
		if a, r := burst(4); a != 3 || r != 1 {
			t.Fatalf("after an hour: %d admitted, %d refused; want 3, 1", a, r)
		}
		if n := testutil.ToFloat64(l.m.refused.WithLabelValues("rate")); n != 5 {
			t.Fatalf("refused{rate} = %v, want 5", n)
		}
		_ = l.Close()
		synctest.Wait()
	})
}

func emfileErr() error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

// TestBackoffSchedule: while accept fails for lack of descriptors the
// accept path waits 5 ms, doubling to 1 s, and starts over at 5 ms after
// a success.
func TestBackoffSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		l, err := Wrap(f, Config{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		const fails = 10
		for range fails {
			f.q <- emfileErr()
		}
		f.pipe()
		f.q <- emfileErr()
		f.q <- emfileErr()
		f.pipe()
		got := acceptAll(l)
		// Receiving blocks durably, so the bubble's clock runs through
		// the back-off.
		for range 2 {
			c, ok := <-got
			if !ok {
				t.Fatal("Accept ended")
			}
			_ = c.Close()
		}
		calls := f.callTimes()
		var gaps []time.Duration
		for i := 1; i < len(calls); i++ {
			gaps = append(gaps, calls[i].Sub(calls[i-1]))
		}
		ms := time.Millisecond
		want := []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second,
			0,               // right after the connection came,
			5 * ms, 10 * ms, // a new streak starts over
		}
		if len(gaps) < len(want) {
			t.Fatalf("gaps between accept calls %v, want %v first", gaps, want)
		}
		for i, w := range want {
			if gaps[i] != w {
				t.Fatalf("gaps between accept calls %v, want %v first", gaps[:len(want)], want)
			}
		}
		if n := testutil.ToFloat64(l.m.acceptErrors.WithLabelValues("emfile")); n != fails+2 {
			t.Fatalf("accept_errors{emfile} = %v, want %d", n, fails+2)
		}

		// Close ends a back-off at once.
		f.q <- emfileErr()
		synctest.Wait()
		start := time.Now()
		_ = l.Close()
		synctest.Wait()
		if _, ok := <-got; ok {
			t.Fatal("a connection after Close")
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("Close waited %v for the back-off", d)
		}
	})
}

func TestBrokenSocketEndsAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		l, err := Wrap(f, Config{})
		if err != nil {
			t.Fatal(err)
		}
		broken := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EBADF)}
		f.q <- broken
		if _, err := l.Accept(); !errors.Is(err, syscall.EBADF) {
			t.Fatalf("Accept = %v, want the EBADF", err)
		}
		if n := testutil.ToFloat64(l.m.acceptErrors.WithLabelValues("other")); n != 1 {
			t.Fatalf("accept_errors{other} = %v, want 1", n)
		}
		_ = l.Close()
	})
}

// TestRefuseHookIsBounded: a Refuse hook writing to a client that never
// reads is cut off by RefuseTimeout, and the next connection is served.
func TestRefuseHookIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		hooked := make(chan error, 1)
		var reason Reason
		l, err := Wrap(f, Config{MaxConns: 1, RefuseTimeout: 50 * time.Millisecond, Refuse: func(c net.Conn, r Reason) {
			reason = r
			_, err := c.Write([]byte(strings.Repeat("x", 1<<20)))
			hooked <- err
		}})
		if err != nil {
			t.Fatal(err)
		}
		got := acceptAll(l)
		f.pipe()
		synctest.Wait()
		held := <-got

		mute := f.pipe() // refused; the hook's write finds no reader
		time.Sleep(49 * time.Millisecond)
		synctest.Wait()
		if len(hooked) != 0 {
			t.Fatal("the hook's write ended before RefuseTimeout")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		select {
		case err := <-hooked:
			if !errors.Is(err, os.ErrDeadlineExceeded) || reason != ReasonLimit {
				t.Fatalf("hook write: %v, reason %q", err, reason)
			}
		default:
			t.Fatal("the hook's write still blocked after RefuseTimeout")
		}
		if closedClients(t, []net.Conn{mute}) != 1 {
			t.Fatal("the refused connection was not closed")
		}
		_ = held.Close()
		f.pipe()
		synctest.Wait()
		if len(got) != 1 {
			t.Fatal("the next connection was not admitted")
		}
		_ = (<-got).Close()
		_ = l.Close()
		synctest.Wait()
	})
}
