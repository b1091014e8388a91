package redis

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/internal/redistest"
)

// appendN appends n updates named prefix-i through e and returns them.
func appendN(t *testing.T, e *Engine, prefix string, n int) []*hub.Update {
	t.Helper()
	us := make([]*hub.Update, n)
	for i := range n {
		us[i] = enginetest.NewUpdate(fmt.Sprintf("%s-%d", prefix, i))
		if err := e.Append(t.Context(), us[i]); err != nil {
			t.Fatalf("Append(%s): %v", us[i].ID, err)
		}
	}
	return us
}

// fedIDs returns the ids fed so far, in order.
func (b *batches) fedIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for _, x := range b.bs {
		for _, u := range x.Updates {
			ids = append(ids, u.ID)
		}
	}
	return ids
}

// TestCluster: on a Redis Cluster the hub's keys share one slot, and two
// nodes appending through different cluster nodes' connections share one
// order.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	url := "redis+cluster" + c.URL()[len("redis"):]
	e1, b1, _ := node(t, url, "cl")
	e2, b2, _ := node(t, url, "cl")
	if got := e1.Topology(); len(got) < 8 || got[:8] != "cluster " {
		t.Errorf("Topology() = %q, want a cluster", got)
	}
	done := make(chan []*hub.Update, 1)
	go func() { done <- appendN(t, e2, "two", 50) }()
	one := appendN(t, e1, "one", 50)
	two := <-done
	for _, b := range []*batches{b1, b2} {
		waitFor(t, "both nodes fed 100", func() bool { return len(b.fedIDs()) == 100 })
	}
	if a, b := fmt.Sprint(b1.fedIDs()), fmt.Sprint(b2.fedIDs()); a != b {
		t.Fatalf("the nodes fed different orders:\n%s\n%s", a, b)
	}
	for _, u := range append(one, two...) {
		pos, ok, err := e2.Lookup(t.Context(), u.ID)
		if err != nil || !ok || pos.Seq != u.Seq {
			t.Fatalf("Lookup(%s) = %+v, %v, %v; want Seq %d", u.ID, pos, ok, err, u.Seq)
		}
	}
	// Every key of the hub is in the slot of its hash tag.
	owner := c.NodeFor(t, e1.keys.log)
	for _, k := range []string{e1.keys.meta, e1.keys.log, e1.keys.ids} {
		if got := owner.Do(t, "EXISTS", k); got != "1" {
			t.Errorf("EXISTS %s on the slot's owner = %s", k, got)
		}
	}
}

// TestWait: with Wait, an append is acknowledged once a replica has it;
// without a replica to confirm, it fails with ErrNotReplicated instead.
func TestWait(t *testing.T) {
	master := redistest.Start(t, redistest.Options{})
	e, err := Open(t.Context(), master.URL(), Options{Prefix: "wait", Wait: 1, WaitTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if _, err := e.Listen(func(hub.Batch) {}); err != nil {
		t.Fatal(err)
	}
	u := enginetest.NewUpdate("alone")
	if err := e.Append(t.Context(), u); !errors.Is(err, ErrNotReplicated) || u.Seq != 0 {
		t.Fatalf("Append with no replica = Seq %d, %v; want ErrNotReplicated", u.Seq, err)
	}
	replica := redistest.Start(t, redistest.Options{ReplicaOf: master})
	// A replica confirms in its own time: give it a bound no loaded
	// machine reaches.
	e2, err := Open(t.Context(), master.URL(), Options{Prefix: "wait", Wait: 1, WaitTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e2.Close() })
	if _, err := e2.Listen(func(hub.Batch) {}); err != nil {
		t.Fatal(err)
	}
	us := appendN(t, e2, "replicated", 20)
	// The replica has each of them as soon as the append returned.
	last := fmt.Sprintf("%d-0", us[len(us)-1].Seq)
	if got := replica.Do(t, "XRANGE", e2.keys.log, last, last); got == "" || got == "[]" {
		t.Fatalf("the replica lacks the last acknowledged update: %q", got)
	}
}

// TestBreaker: while Redis is down, appends fail, and after a few the
// breaker refuses them at once without sending anything; the engine says
// it is not healthy. Once Redis is back, appends go through again.
func TestBreaker(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e, b, _ := node(t, srv.URL(), "breaker")
	appendN(t, e, "before", 3)
	waitFor(t, "fed", func() bool { return len(b.fedIDs()) == 3 })
	if err := e.Healthy(); err != nil {
		t.Fatalf("Healthy with Redis up: %v", err)
	}
	srv.Stop()
	refused := 0
	waitFor(t, "the breaker opens", func() bool {
		u := enginetest.NewUpdate("during")
		err := e.Append(t.Context(), u)
		if err == nil {
			t.Fatal("an append succeeded while Redis was stopped")
		}
		if u.Seq != 0 {
			t.Fatalf("a failed append set Seq %d", u.Seq)
		}
		if errors.Is(err, ErrUnavailable) {
			refused++
		}
		return refused == 3
	})
	if err := e.Healthy(); err == nil {
		t.Error("Healthy with Redis stopped and the breaker open")
	}
	srv.Restart() // empty: the log comes back as a new epoch
	var u *hub.Update
	waitFor(t, "appends go through again", func() bool {
		u = enginetest.NewUpdate("after")
		return e.Append(t.Context(), u) == nil
	})
	waitFor(t, "healthy again", func() bool { return e.Healthy() == nil })
	if n := testutilCounter(e.m.reconnects); n < 1 {
		t.Errorf("reconnects = %v, want at least 1", n)
	}
	waitFor(t, "the update appended after the outage is fed", func() bool {
		ids := b.fedIDs()
		return len(ids) > 0 && ids[len(ids)-1] == "after"
	})
}

// TestSentinel: through Sentinel the engine follows the master across a
// failover; every update acknowledged with Wait 1 before and after it is
// in the history. It takes two replicas: right after a failover the new
// master's only replica is the other one, since Sentinel turns the old
// master into a replica only some seconds later.
func TestSentinel(t *testing.T) {
	master := redistest.Start(t, redistest.Options{})
	redistest.Start(t, redistest.Options{ReplicaOf: master})
	redistest.Start(t, redistest.Options{ReplicaOf: master})
	ss := redistest.StartSentinels(t, master, "main", 3, 2)
	e, _, _ := node(t, ss.URL(0), "sentinel")
	e.wait, e.waitTime = 1, time.Second
	before := appendN(t, e, "before", 10)
	ss.Failover(t)
	var after []*hub.Update
	waitFor(t, "appends go through on the new master", func() bool {
		u := enginetest.NewUpdate(fmt.Sprintf("after-%d", len(after)))
		if e.Append(t.Context(), u) != nil {
			return false
		}
		after = append(after, u)
		return len(after) == 10
	})
	for _, u := range append(before, after...) {
		if _, ok, err := e.Lookup(t.Context(), u.ID); err != nil || !ok {
			t.Errorf("acknowledged %s missing after the failover: %v, %v", u.ID, ok, err)
		}
	}
}
