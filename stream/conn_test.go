package stream

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"testing"
	"testing/synctest"
	"time"
)

// pipeConn returns a Conn over one end of a net.Pipe, which works inside
// a synctest bubble, the other end, and the counter of the deadlines the
// Conn arms on its end.
func pipeConn(t *testing.T) (*Conn, net.Conn, *countingConn) {
	t.Helper()
	a, b := net.Pipe()
	cc := &countingConn{Conn: a}
	c := &Conn{conn: cc}
	t.Cleanup(func() { c.Close(); b.Close() })
	return c, b, cc
}

// readN reads exactly n bytes from r in the background.
func readN(r io.Reader, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(r, make([]byte, n))
		done <- err
	}()
	return done
}

func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// TestWriteAfterDeadlineFails: once the deadline has passed, Write and
// Flush fail with os.ErrDeadlineExceeded, and what was queued before is
// not sent.
func TestWriteAfterDeadlineFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, peer, _ := pipeConn(t)
		got := drain(peer)
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("queued")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if err := c.Flush(); !isDeadline(err) {
			t.Fatalf("Flush after the deadline: %v", err)
		}
		if _, err := c.Write([]byte("late")); !isDeadline(err) {
			t.Fatalf("Write after the deadline: %v", err)
		}
		if err := c.Flush(); !isDeadline(err) {
			t.Fatalf("empty Flush after the deadline: %v", err)
		}
		c.Close()
		if n := <-got; n != 0 {
			t.Fatalf("%d bytes sent after the deadline", n)
		}
	})
}

// TestShorterDeadlineHolds is the closing write at shutdown: after a batch
// under a long deadline, a short one set for the closing words bounds a
// write to a client that stopped reading, at once, not at the end of the
// long one.
func TestShorterDeadlineHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, peer, _ := pipeConn(t)
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		read := readN(peer, 5)
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := <-read; err != nil {
			t.Fatal(err)
		}
		_ = c.SetWriteDeadline(time.Time{})
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		_ = c.SetWriteDeadline(start.Add(time.Second))
		if _, err := c.Write([]byte(": closed\n\n")); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); !isDeadline(err) {
			t.Fatalf("closing write to a stalled reader: %v", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("closing write failed after %v, want 1s", d)
		}
	})
}

// TestZeroLiftsDeadline: after the zero time, a write waits for a slow
// reader as long as it takes, although the deadline armed for an earlier
// batch has long passed.
func TestZeroLiftsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, peer, _ := pipeConn(t)
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		read := readN(peer, 1)
		_, _ = c.Write([]byte("a"))
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		<-read
		_ = c.SetWriteDeadline(time.Time{})
		time.Sleep(5 * time.Second)
		start := time.Now()
		go func() {
			time.Sleep(time.Minute)
			<-readN(peer, 1)
		}()
		_, _ = c.Write([]byte("b"))
		if err := c.Flush(); err != nil {
			t.Fatalf("write without a deadline: %v", err)
		}
		if d := time.Since(start); d != time.Minute {
			t.Fatalf("write returned after %v, want when the reader came (1m)", d)
		}
	})
}

// TestLazyArming: batches a few milliseconds apart, each under a fresh
// write timeout, arm the connection's deadline once per quarter of the
// timeout, not once per batch.
func TestLazyArming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, peer, cc := pipeConn(t)
		got := drain(peer)
		const batches = 1000
		for range batches {
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, _ = c.Write([]byte("x"))
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			_ = c.SetWriteDeadline(time.Time{})
			time.Sleep(10 * time.Millisecond)
		}
		// 10s of batches under a 10s timeout: re-armed every 2.5s.
		if n := cc.count(); n < 1 || n > 5 {
			t.Fatalf("%d deadlines armed for %d batches, want 4 or so", n, batches)
		}
		c.Close()
		if n := <-got; n != batches {
			t.Fatalf("%d bytes arrived, want %d", n, batches)
		}
	})
}

// TestDeadlineModel checks random sequences of deadlines, pauses and
// writes against the net.Conn model: a write after the deadline fails at
// once; a write to a reader that reads succeeds; a write to a stalled
// reader fails no later than its deadline and no sooner than
// (slack-1)/slack of the time it had; without a deadline it waits for the
// reader however long that takes. A batch whose deadline passes between
// its first frame and its flush is not sent.
func TestDeadlineModel(t *testing.T) {
	seed := rand.Uint64()
	if v := os.Getenv("HERALD_DEADLINE_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("HERALD_DEADLINE_SEED: %v", err)
		}
	}
	t.Logf("seed %d (HERALD_DEADLINE_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for run := range 40 {
		synctest.Test(t, func(t *testing.T) {
			c, peer, _ := pipeConn(t)
			var dl time.Time
			for step := range 30 {
				now := time.Now()
				expired := !dl.IsZero() && !now.Before(dl)
				switch op := rng.IntN(6); op {
				case 0:
					dl = time.Time{}
					if rng.IntN(4) > 0 {
						dl = now.Add(time.Duration(rng.Int64N(int64(20*time.Second))) + time.Millisecond)
					}
					_ = c.SetWriteDeadline(dl)
				case 1:
					time.Sleep(time.Duration(rng.Int64N(int64(3 * time.Second))))
				case 2: // the reader reads
					var read <-chan error
					if !expired {
						read = readN(peer, 3)
					}
					_, werr := c.Write([]byte("abc"))
					err := c.Flush()
					switch {
					case expired && (!isDeadline(werr) || !isDeadline(err)):
						t.Fatalf("run %d step %d: write after the deadline: %v, %v", run, step, werr, err)
					case !expired && (werr != nil || err != nil):
						t.Fatalf("run %d step %d: write before the deadline: %v, %v", run, step, werr, err)
					case !expired:
						if err := <-read; err != nil {
							t.Fatal(err)
						}
					}
					if d := time.Since(now); d != 0 {
						t.Fatalf("run %d step %d: a write to a reader took %v", run, step, d)
					}
				case 5: // a pause inside a batch; the reader reads
					_, werr := c.Write([]byte("abc"))
					time.Sleep(time.Duration(rng.Int64N(int64(3 * time.Second))))
					_, werr2 := c.Write([]byte("def"))
					late := !dl.IsZero() && !time.Now().Before(dl)
					var read <-chan error
					if !late {
						read = readN(peer, 6)
					}
					err := c.Flush()
					switch {
					case expired && !isDeadline(werr):
						t.Fatalf("run %d step %d: first write after the deadline: %v", run, step, werr)
					case !expired && werr != nil:
						t.Fatalf("run %d step %d: first write before the deadline: %v", run, step, werr)
					case late && !isDeadline(err):
						t.Fatalf("run %d step %d: batch flushed after its deadline: %v", run, step, err)
					case !late && (werr2 != nil || err != nil):
						t.Fatalf("run %d step %d: batch before its deadline: %v, %v", run, step, werr2, err)
					case !late:
						if err := <-read; err != nil {
							t.Fatal(err)
						}
					}
				case 3, 4: // the reader stalls
					if dl.IsZero() {
						go func() {
							time.Sleep(time.Hour)
							<-readN(peer, 3)
						}()
					}
					_, werr := c.Write([]byte("abc"))
					err := c.Flush()
					took := time.Since(now)
					switch {
					case expired:
						if !isDeadline(werr) || !isDeadline(err) || took != 0 {
							t.Fatalf("run %d step %d: write after the deadline: %v, %v after %v", run, step, werr, err, took)
						}
					case dl.IsZero():
						if werr != nil || err != nil || took != time.Hour {
							t.Fatalf("run %d step %d: write without a deadline: %v, %v after %v", run, step, werr, err, took)
						}
					default:
						left := dl.Sub(now)
						if werr != nil || !isDeadline(err) || took > left || took < left-left/slack {
							t.Fatalf("run %d step %d: write with %v left: %v, %v after %v", run, step, left, werr, err, took)
						}
					}
				}
			}
		})
	}
}

// TestFlushWritesOnce: frames queued in a batch go out in one write, the
// first one without being copied when it is alone, and buffers large
// batches in pieces.
func TestFlushWritesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, peer, _ := pipeConn(t)
		frames := [][]byte{[]byte("id: 1\n\n"), []byte("id: 2\n\n"), []byte("id: 3\n\n")}
		for _, n := range []int{1, 3} {
			want := 0
			for _, f := range frames[:n] {
				want += len(f)
				if _, err := c.Write(f); err != nil {
					t.Fatal(err)
				}
			}
			// One Read on a pipe returns what one Write sent, at most.
			got := make(chan int, 1)
			go func() {
				b := make([]byte, 1024)
				m, _ := peer.Read(b)
				got <- m
			}()
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if m := <-got; m != want {
				t.Fatalf("%d frames: first read got %d bytes, want all %d", n, m, want)
			}
			if c.buf != nil {
				t.Fatal("an idle stream holds a write buffer")
			}
		}
		// A long replay is written in pieces of about flushAt bytes.
		big := make([]byte, 4<<10)
		total := drain(peer)
		for range 40 {
			if _, err := c.Write(big); err != nil {
				t.Fatal(err)
			}
			if c.buf != nil && len(*c.buf) >= flushAt {
				t.Fatalf("buffer grew to %d bytes", len(*c.buf))
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if n := <-total; n != 40*len(big) {
			t.Fatalf("%d bytes arrived, want %d", n, 40*len(big))
		}
	})
}
