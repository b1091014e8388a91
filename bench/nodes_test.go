package bench

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
)

// sharedLog is one memory history under several hubs, as a shared engine
// is under several nodes: every hub's feed gets every append, whichever
// hub made it.
type sharedLog struct {
	*memory.Engine
	head hub.Position

	mu    sync.Mutex
	feeds []func(hub.Batch)
}

func newSharedLog(t *testing.T) *sharedLog {
	s := &sharedLog{Engine: memory.New(memory.Options{})}
	t.Cleanup(func() { _ = s.Close() })
	var err error
	s.head, err = s.Engine.Listen(func(b hub.Batch) {
		// The engine's calls never overlap, nor do the feeds' then.
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, f := range s.feeds {
			f(b)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// node is the engine one hub is given.
func (s *sharedLog) node() hub.Engine { return sharedNode{s} }

type sharedNode struct{ *sharedLog }

// Listen registers one hub's feed. The hubs all listen before the first
// append, so the head is the log's start.
func (n sharedNode) Listen(feed func(hub.Batch)) (hub.Position, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.feeds = append(n.feeds, feed)
	return n.head, nil
}

// TestSpreadOverHubs: with two hubs in --hub, subscribers (in this
// process and in workers) and publishers are spread over them
// round-robin, and every publish, made on either, is counted as delivered
// to the subscribers of both.
func TestSpreadOverHubs(t *testing.T) {
	for _, workers := range []int{-1, 2} {
		name := "one process"
		if workers > 0 {
			name = "two workers"
		}
		t.Run(name, func(t *testing.T) {
			if workers > 0 && testing.Short() {
				t.Skip("starts processes")
			}
			log := newSharedLog(t)
			a, seenA := serveHerald(t, h1, log.node(), "")
			b, seenB := serveHerald(t, h1, log.node(), a.Hub)
			cfg := a
			cfg.Hub = a.Hub + "," + b.Hub
			cfg.Workers = workers
			if workers > 0 {
				cfg.WorkerCommand = []string{os.Args[0]}
				cfg.WorkerEnv = []string{workerEnv + "=1"}
			}
			cfg.Subscribers, cfg.Publishers = 41, 4
			cfg.Rate, cfg.Duration, cfg.Drain = 200, time.Second, 5*time.Second
			r, _ := run(t, "fanout", cfg)

			if r.Published == 0 || r.PublishErrors != 0 {
				t.Fatalf("published %d, %d errors: %v", r.Published, r.PublishErrors, r.Notes)
			}
			if want := r.Published * 41; r.Expected != want || r.Delivered != want {
				t.Errorf("expected %d, delivered %d; want %d both: every publish on both hubs' subscribers", r.Expected, r.Delivered, want)
			}
			if r.Lost != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 {
				t.Errorf("lost %d, duplicates %d, out of order %d", r.Lost, r.Duplicates, r.OutOfOrder)
			}
			if r.Hub != cfg.Hub || !strings.Contains(r.Hub, ",") {
				t.Errorf("result names hub %q, want %q", r.Hub, cfg.Hub)
			}
			seenA.mu.Lock()
			defer seenA.mu.Unlock()
			seenB.mu.Lock()
			defer seenB.mu.Unlock()
			// Subscribers 0, 2, …, 40 on the first hub, 1, 3, …, 39 on the
			// second, whichever process holds them.
			if seenA.gets != 21 || seenB.gets != 20 {
				t.Errorf("subscriptions %d and %d, want 21 and 20", seenA.gets, seenB.gets)
			}
			// Publishers 0 and 2 on the first hub, 1 and 3 on the second,
			// each at a quarter of the rate.
			posts := seenA.posts + seenB.posts
			if int64(posts) < r.Published || seenA.posts < posts*2/5 || seenB.posts < posts*2/5 {
				t.Errorf("publishes %d and %d of %d acknowledged, want about half each", seenA.posts, seenB.posts, r.Published)
			}
		})
	}
}

// TestHubList: every URL of the list is checked and normalised.
func TestHubList(t *testing.T) {
	c := Config{Hub: "http://127.0.0.1:1, http://[::1]:2/hub"}
	c.fill()
	if err := c.check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Hubs(), []string{"http://127.0.0.1:1" + defaultHubPath, "http://[::1]:2/hub"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("hubs %q, want %q", got, want)
	}
	for _, bad := range []string{"http://127.0.0.1:1,", "http://127.0.0.1:1,http://192.0.2.1:2", ",http://127.0.0.1:1"} {
		c := Config{Hub: bad}
		c.fill()
		if err := c.check(context.Background()); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// A 127.0.0.x source cannot reach ::1: no source addresses then.
	e, err := newEnv(Config{Hub: "http://127.0.0.1:1/h,http://[::1]:2/h", SourceAddrs: 8}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	if len(e.dialer.addrs) != 0 || len(e.nodes) != 2 {
		t.Errorf("%d source addresses, %d nodes; want 0 and 2", len(e.dialer.addrs), len(e.nodes))
	}
}
