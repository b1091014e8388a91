package stream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestGate: Shutdown closes the gate before it ends the streams, waits for
// every ticket, and Enter refuses from then on.
func TestGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var tr Tracker
		k, ok := tr.Enter()
		if !ok || tr.Len() != 1 {
			t.Fatalf("Enter on an open tracker: %v, %d tracked", ok, tr.Len())
		}
		ended := make(chan struct{})
		shut := make(chan error, 1)
		go func() {
			shut <- tr.Shutdown(t.Context(), func() {
				if _, ok := tr.Enter(); ok {
					t.Error("Enter admitted a stream while the streams were being ended")
				}
				close(ended)
			})
		}()
		<-ended
		synctest.Wait()
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned (%v) with a ticket held", err)
		default:
		}
		k.Done()
		k.Done() // released once
		if err := <-shut; err != nil {
			t.Fatal(err)
		}
		if _, ok := tr.Enter(); ok {
			t.Fatal("Enter admitted a stream after Shutdown")
		}
		if tr.Len() != 0 {
			t.Fatalf("%d tracked after release", tr.Len())
		}
		tr.Wait()
		if err := tr.Shutdown(t.Context(), nil); err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
	})
}

// TestGateRace: streams enter, live and leave at random moments while a
// shutdown starts at a random moment. Every stream admitted is released
// before Shutdown returns, and none is admitted once it has.
func TestGateRace(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for range 50 {
		delays := make([]time.Duration, 3*64+1)
		for i := range delays {
			delays[i] = time.Duration(rng.Int64N(int64(50 * time.Millisecond)))
		}
		synctest.Test(t, func(t *testing.T) {
			var tr Tracker
			var admitted, released, late atomic.Int64
			var shutDone atomic.Bool
			var wg sync.WaitGroup
			for i := range 64 {
				wg.Go(func() {
					time.Sleep(delays[3*i])
					k, ok := tr.Enter()
					if !ok {
						return
					}
					if shutDone.Load() {
						late.Add(1)
					}
					admitted.Add(1)
					work := func() {
						time.Sleep(delays[3*i+1])
						released.Add(1)
					}
					if i%2 == 0 {
						k.Go(work) // the stream outlives its request
						k.Done()   // no effect: Go owns the ticket
						return
					}
					defer k.Done()
					work()
				})
			}
			time.Sleep(delays[len(delays)-1])
			if err := tr.Shutdown(t.Context(), nil); err != nil {
				t.Fatal(err)
			}
			shutDone.Store(true)
			if a, r := admitted.Load(), released.Load(); a != r {
				t.Fatalf("Shutdown returned with %d of %d admitted streams still running", a-r, a)
			}
			wg.Wait()
			tr.Wait()
			if late.Load() != 0 {
				t.Fatalf("%d streams admitted after Shutdown returned", late.Load())
			}
		})
	}
}

// TestShutdownCutsWrites: a stream blocked writing to a client that stopped
// reading, under a long deadline, fails CloseTimeout after the shutdown
// starts; a later deadline set by its writer does not escape the bound,
// and a stream that arrives during the shutdown is bounded too.
func TestShutdownCutsWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var tr Tracker
		k, _ := tr.Enter()
		c, _, _ := pipeConn(t)
		tr.register(k, c)
		late, _ := tr.Enter()
		cl, _, _ := pipeConn(t)

		type result struct {
			err, again error
			at         time.Time
		}
		blocked := make(chan result, 1)
		k.Go(func() {
			_ = c.SetWriteDeadline(time.Now().Add(time.Hour))
			_, _ = c.Write([]byte("data"))
			var r result
			r.err = c.Flush()
			r.at = time.Now()
			_ = c.SetWriteDeadline(time.Now().Add(time.Hour))
			_, _ = c.Write([]byte(": closed\n\n"))
			r.again = c.Flush()
			blocked <- r
		})
		time.Sleep(2 * time.Second)
		start := time.Now()
		shut := make(chan error, 1)
		go func() { shut <- tr.Shutdown(t.Context(), nil) }()
		synctest.Wait()
		tr.register(late, cl) // taken over while the shutdown waits
		lateErr := make(chan error, 1)
		late.Go(func() {
			_ = cl.SetWriteDeadline(time.Now().Add(time.Hour))
			_, _ = cl.Write([]byte("x"))
			lateErr <- cl.Flush()
		})
		r := <-blocked
		if !isDeadline(r.err) || r.at.Sub(start) != CloseTimeout {
			t.Fatalf("blocked write: %v after %v, want a deadline error after %v", r.err, r.at.Sub(start), CloseTimeout)
		}
		if !isDeadline(r.again) || time.Since(r.at) != 0 {
			t.Fatalf("write under a later deadline after the cut: %v", r.again)
		}
		if err := <-lateErr; !isDeadline(err) || time.Since(start) != CloseTimeout {
			t.Fatalf("stream taken over during the shutdown: %v after %v", err, time.Since(start))
		}
		if err := <-shut; err != nil {
			t.Fatal(err)
		}
	})
}

// TestShutdownForcesClose: a stream still running when the grace period
// ends has its connection closed, and Shutdown says why it gave up.
func TestShutdownForcesClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var tr Tracker
		k, _ := tr.Enter()
		late, _ := tr.Enter()
		c, peer, _ := pipeConn(t)
		tr.register(k, c)
		stuck := make(chan struct{})
		k.Go(func() { <-stuck }) // ignores the end of the hub's streams
		cause := errors.New("grace period over")
		ctx, cancel := context.WithTimeoutCause(t.Context(), 5*time.Second, cause)
		defer cancel()
		if err := tr.Shutdown(ctx, nil); !errors.Is(err, cause) {
			t.Fatalf("Shutdown past its grace period: %v", err)
		}
		if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("client read %v, want the connection closed", err)
		}
		// Taken over after the grace period: closed at once.
		cl, lpeer, _ := pipeConn(t)
		tr.register(late, cl)
		if _, err := lpeer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("late stream: client read %v, want the connection closed", err)
		}
		late.Done()
		close(stuck)
		tr.Wait()
	})
}

// server runs handler on a real loopback listener under HTTP/1.1 or
// HTTP/2 (TLS).
func server(t *testing.T, h2 bool, handler http.HandlerFunc) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(handler)
	if h2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	client := srv.Client()
	if tr, ok := client.Transport.(*http.Transport); ok {
		t.Cleanup(tr.CloseIdleConnections)
	}
	return srv, client
}

// TestHijack: the response head is ours, frames follow it unframed, the
// stream outlives its handler, counted, and closing it ends the body.
func TestHijack(t *testing.T) {
	var tr Tracker
	release := make(chan struct{})
	srv, client := server(t, false, func(w http.ResponseWriter, r *http.Request) {
		k, ok := tr.Enter()
		defer k.Done()
		if !ok {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Accel-Buffering", "no")
		c, err := k.Hijack(w, http.StatusOK)
		if err != nil {
			t.Error(err)
			return
		}
		k.Go(func() {
			_, _ = c.Write([]byte("id: 1\ndata: a\n\n"))
			_ = c.Flush()
			<-release
			_, _ = c.Write([]byte(": bye\n\n"))
			_ = c.Flush()
		})
	})
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("X-Accel-Buffering") != "no" || !resp.Close || resp.Header.Get("Date") == "" {
		t.Fatalf("head: %d %v close=%v", resp.StatusCode, resp.Header, resp.Close)
	}
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "id: 1\n" {
		t.Fatalf("first line %q", line)
	}
	if tr.Len() != 1 {
		t.Fatalf("%d streams tracked, want 1", tr.Len())
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := contextWithTimeout(t, 10*time.Second)
		defer cancel()
		shut <- tr.Shutdown(ctx, func() { close(release) })
	}()
	rest, err := io.ReadAll(br)
	if err != nil || !strings.HasSuffix(string(rest), ": bye\n\n") {
		t.Fatalf("rest of the stream: %q, %v", rest, err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	tr.Wait()
	// Refused from now on.
	resp2, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after shutdown: %d", resp2.StatusCode)
	}
}

// TestShutdownCutsStalledReader, over real loopback, HTTP/1.1 taken over,
// HTTP/1.1 and HTTP/2 inside net/http: a client that stops reading while
// the stream has far more to send than the socket buffers and flow
// control hold does not hold the shutdown, although the stream's own
// deadline is an hour away.
func TestShutdownCutsStalledReader(t *testing.T) {
	for _, mode := range []string{"hijack", "http1", "http2"} {
		t.Run(mode, func(t *testing.T) {
			var tr Tracker
			var written atomic.Int64
			werr := make(chan error, 1)
			srv, client := server(t, mode == "http2", func(w http.ResponseWriter, r *http.Request) {
				k, _ := tr.Enter()
				defer k.Done()
				w.Header().Set("Content-Type", "text/event-stream")
				var st interface {
					Write([]byte) (int, error)
					Flush() error
					SetWriteDeadline(time.Time) error
				}
				if mode == "hijack" {
					c, err := k.Hijack(w, http.StatusOK)
					if err != nil {
						t.Error(err)
						return
					}
					st = c
				} else {
					w.WriteHeader(http.StatusOK)
					st = k.Response(w)
				}
				chunk := []byte("data: " + strings.Repeat("x", 64<<10) + "\n\n")
				for {
					_ = st.SetWriteDeadline(time.Now().Add(time.Hour))
					if _, err := st.Write(chunk); err != nil {
						werr <- err
						return
					}
					if err := st.Flush(); err != nil {
						werr <- err
						return
					}
					written.Add(int64(len(chunk)))
				}
			})
			resp, err := client.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			waitUntil(t, "the stream is writing", func() bool { return written.Load() > 0 })
			ctx, cancel := contextWithTimeout(t, time.Minute)
			defer cancel()
			if err := tr.Shutdown(ctx, nil); err != nil {
				t.Fatalf("shutdown held by a stalled reader: %v (%d bytes written)", err, written.Load())
			}
			if err := <-werr; err == nil {
				t.Fatal("the stream ended without a write error")
			}
			tr.Wait()
		})
	}
}

// TestResponseAfterHandler: a shutdown that comes after a net/http stream
// ended does not touch its response writer, which net/http recycles once
// the handler returns (HTTP/2's would panic).
func TestResponseAfterHandler(t *testing.T) {
	var tr Tracker
	saved := make(chan *Response, 1)
	srv, client := server(t, true, func(w http.ResponseWriter, r *http.Request) {
		k, _ := tr.Enter()
		defer k.Done()
		w.WriteHeader(http.StatusOK)
		st := k.Response(w)
		_, _ = st.Write([]byte(": hi\n\n"))
		_ = st.Flush()
		saved <- st
	})
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	// As if Shutdown had listed the stream just before its handler
	// returned and cut it just after.
	waitUntil(t, "handler done", func() bool { return tr.Len() == 0 })
	(<-saved).cut(time.Now())
	// The same with no writer behind it at all.
	r := &Response{}
	_ = r.Close()
	r.cut(time.Now())
	if err := tr.Shutdown(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
}
