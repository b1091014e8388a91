package redis

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/internal/redistest"
)

// TestLateAppendWritesNothing: an append sent to a Redis that hangs fails,
// and when Redis wakes up later the script refuses to run past its
// deadline: refused means absent, even when the request was on its way.
func TestLateAppendWritesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e, b, _ := node(t, srv.URL(), "late")
	appendN(t, e, "before", 1)
	srv.Pause()
	u := enginetest.NewUpdate("hung")
	err := e.Append(t.Context(), u)
	srv.Resume()
	if err == nil || u.Seq != 0 {
		t.Fatalf("Append to a hung Redis = Seq %d, %v; want an error", u.Seq, err)
	}
	// Whatever Redis had queued has run once it answers again.
	waitFor(t, "appends go through again", func() bool {
		return e.Append(t.Context(), enginetest.NewUpdate("after")) == nil
	})
	waitFor(t, "the update after is fed", func() bool {
		ids := b.fedIDs()
		return len(ids) > 0 && ids[len(ids)-1] == "after"
	})
	for _, id := range b.fedIDs() {
		if id == "hung" {
			t.Fatal("the refused append was fed")
		}
	}
	if _, ok, err := e.Lookup(t.Context(), "hung"); ok || err != nil {
		t.Fatalf("Lookup of the refused append = %v, %v; want not found", ok, err)
	}
}

// TestLostAnswerResolved: when the script ran but its answer was lost,
// the append finds its update in the log and succeeds with its Seq.
func TestLostAnswerResolved(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	p := startProxy(t, srv.Addr())
	e, b, _ := node(t, "redis://"+p.addr+"/0", "lostanswer")
	appendN(t, e, "before", 1)
	p.drop.Store(true)
	go func() {
		time.Sleep(300 * time.Millisecond)
		p.drop.Store(false)
	}()
	u := enginetest.NewUpdate("answer-lost")
	if err := e.Append(t.Context(), u); err != nil {
		t.Fatalf("Append whose answer was lost: %v", err)
	}
	if p.dropped.Load() == 0 {
		t.Fatal("the proxy dropped no answer")
	}
	pos, ok, err := e.Lookup(t.Context(), u.ID)
	if err != nil || !ok || pos.Seq != u.Seq || u.Seq != 2 {
		t.Fatalf("Lookup = %+v, %v, %v; the append said Seq %d, want 2", pos, ok, err, u.Seq)
	}
	waitFor(t, "fed once", func() bool { return len(b.fedIDs()) == 2 })
	if n := testutilCounter(e.m.resolved); n != 1 {
		t.Errorf("resolved appends = %v, want 1", n)
	}
}

// proxy forwards TCP to Redis; while drop is on, it closes a connection
// instead of passing Redis's answer back.
type proxy struct {
	addr    string
	drop    atomic.Bool
	dropped atomic.Int32
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, r)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(r, c); r.Close() })
			wg.Go(func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := r.Read(buf)
					if n > 0 && p.drop.Load() {
						p.dropped.Add(1)
						c.Close()
						return
					}
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						if !errors.Is(err, net.ErrClosed) {
							c.Close()
						}
						return
					}
				}
			})
		}
	})
	return p
}
