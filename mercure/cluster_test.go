package mercure

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
)

// fakeCluster is hub.Cluster in memory, on the bubble's clock: what
// engine/redis keeps in Redis, for tests of what the nodes do with it.
type fakeCluster struct {
	mu       sync.Mutex
	presence map[string]map[string][]byte
	info     map[string][]byte
	lease    map[string]time.Time
	claim    map[string]time.Time
	claimer  map[string]string
	// deleteDelay makes PresenceDelete that slow.
	deleteDelay time.Duration
	revoked     map[string]hub.Revocation
	kicked      map[string]time.Time
	parked      map[string][]fakeParked
}

type fakeParked struct {
	node, id string
	until    time.Time
}

func (f *fakeCluster) Park(_ context.Context, key, node, id string, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.parked[key] = append(f.parked[key], fakeParked{node, id, until})
	return nil
}

func (f *fakeCluster) TakeParked(_ context.Context, key, by string) (string, string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for i, p := range f.parked[key] {
		if p.node != by && now.Before(p.until) && now.Before(f.lease[p.node]) {
			f.parked[key] = slices.Delete(f.parked[key], i, i+1)
			return p.node, p.id, true, nil
		}
	}
	return "", "", false, nil
}

func (f *fakeCluster) Unpark(_ context.Context, key, node, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.parked[key] {
		if p.node == node && p.id == id {
			f.parked[key] = slices.Delete(f.parked[key], i, i+1)
			return true, nil
		}
	}
	return false, nil
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{presence: map[string]map[string][]byte{}, info: map[string][]byte{}, lease: map[string]time.Time{},
		claim: map[string]time.Time{}, claimer: map[string]string{}, revoked: map[string]hub.Revocation{}, kicked: map[string]time.Time{}, parked: map[string][]fakeParked{}}
}

var _ hub.Cluster = (*fakeCluster)(nil)

func (f *fakeCluster) PresenceSet(_ context.Context, node, id string, doc []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.presence[node] == nil {
		f.presence[node] = map[string][]byte{}
	}
	f.presence[node][id] = doc
	return nil
}

func (f *fakeCluster) PresenceDelete(_ context.Context, node, id string) error {
	time.Sleep(f.deleteDelay) // a slow store, in the bubble's time
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.presence[node], id)
	return nil
}

func (f *fakeCluster) PresenceList(context.Context) (map[string][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]byte{}
	for _, m := range f.presence {
		maps.Copy(out, m)
	}
	return out, nil
}

func (f *fakeCluster) PresenceOf(_ context.Context, node string) (map[string][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.presence[node]), nil
}

func (f *fakeCluster) Renew(_ context.Context, node string, info []byte, ttl time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, known := f.info[node]
	f.info[node], f.lease[node] = info, time.Now().Add(ttl)
	return !known, nil
}

func (f *fakeCluster) Nodes(context.Context) ([]hub.NodeState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hub.NodeState
	for _, n := range slices.Sorted(maps.Keys(f.info)) {
		out = append(out, hub.NodeState{Name: n, Info: f.info[n], Alive: time.Now().Before(f.lease[n])})
	}
	return out, nil
}

func (f *fakeCluster) Claim(_ context.Context, node, by string, ttl time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if _, known := f.info[node]; !known || now.Before(f.lease[node]) || now.Before(f.claim[node]) && f.claimer[node] != by {
		return false, nil
	}
	f.claim[node], f.claimer[node] = now.Add(ttl), by
	return true, nil
}

func (f *fakeCluster) Forget(_ context.Context, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.presence, node)
	delete(f.info, node)
	delete(f.lease, node)
	delete(f.claim, node)
	return nil
}

func (f *fakeCluster) Revoke(_ context.Context, sub string, at, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked[sub] = hub.Revocation{At: at, Until: until}
	return nil
}

func (f *fakeCluster) Revocations(context.Context) (map[string]hub.Revocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.revoked), nil
}

func (f *fakeCluster) Kick(_ context.Context, id string, until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kicked[id] = until
	return nil
}

func (f *fakeCluster) Kicks(context.Context) (map[string]time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.kicked), nil
}

func (f *fakeCluster) nodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.info))
}

// clusterNode is a handler with active subscriptions over its own memory
// hub, in the fake cluster, its Run going until stop.
type clusterNode struct {
	h    *Handler
	stop context.CancelFunc
	done chan struct{}
}

const testLease = 4 * time.Second

func startNode(t *testing.T, fc *fakeCluster, name string) *clusterNode {
	t.Helper()
	return startNodeGrace(t, fc, name, -1)
}

// kill stops the node's Run, as a SIGKILL would: no goodbye.
func (n *clusterNode) kill() {
	n.stop()
	<-n.done
}

func leaves(h *Handler) float64 {
	return testutil.ToFloat64(h.presence.events.WithLabelValues("false", "published"))
}

func all(*activeSub, string) bool { return true }

// The subscriptions API of any node answers for every node; a node that
// stops renewing its lease has its subscriptions announced ended once, by
// one of the survivors, within about a lease, and is forgotten.
func TestClusterPresence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := newFakeCluster()
		a, b, c := startNode(t, fc, "a"), startNode(t, fc, "b"), startNode(t, fc, "c")
		a.h.testJoin(t, &Grant{Subject: "ann"}, "https://example.com/x")
		a.h.testJoin(t, &Grant{Subject: "ann"}, "https://example.com/y")
		b.h.testJoin(t, &Grant{Subject: "bob"}, "https://example.com/x")
		synctest.Wait()
		for _, n := range []*clusterNode{a, b, c} {
			es, err := n.h.presence.snapshot(t.Context(), form8, all)
			if err != nil || len(es) != 3 {
				t.Fatalf("node %s lists %d subscriptions (%v), want the cluster's 3", n.h.node, len(es), err)
			}
		}
		if got := fc.nodes(); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("nodes %v", got)
		}

		a.kill()
		time.Sleep(testLease + testLease/2)
		synctest.Wait()
		if got := leaves(b.h) + leaves(c.h); got != 2 {
			t.Fatalf("ends announced by the survivors: %v, want a's 2, once", got)
		}
		if got := fc.nodes(); !slices.Equal(got, []string{"b", "c"}) {
			t.Fatalf("nodes after a's lease ran out: %v", got)
		}
		es, _ := b.h.presence.snapshot(t.Context(), form8, all)
		if len(es) != 1 || es[0].sub.match != "https://example.com/x" {
			t.Fatalf("after a died: %+v", es)
		}
		// Nothing more is announced later.
		time.Sleep(3 * testLease)
		synctest.Wait()
		if got := leaves(b.h) + leaves(c.h); got != 2 {
			t.Fatalf("ends announced after a while: %v, want 2", got)
		}
	})
}

// A revocation made on one node reaches the others within a quarter of a
// lease: they refuse the subject's older tokens too.
func TestClusterRevocation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := newFakeCluster()
		a, b := startNode(t, fc, "a"), startNode(t, fc, "b")
		old := &Grant{Subject: "ann", IssuedAt: time.Now().Add(-time.Minute)}
		a.h.Disconnect(t.Context(), "ann")
		if !a.h.revoked.has(old) {
			t.Fatal("not revoked where it was made")
		}
		time.Sleep(testLease / 4)
		synctest.Wait()
		if !b.h.revoked.has(old) {
			t.Fatal("the revocation did not reach the other node")
		}
		if b.h.revoked.has(&Grant{Subject: "ann", IssuedAt: time.Now().Add(time.Minute)}) {
			t.Fatal("a token issued after the revocation is refused")
		}
	})
}

// Ending a dead node's subscriptions can take longer than the claim's
// three leases (a slow store); the claimer keeps its claim and its own
// lease meanwhile, so each end is announced once, and the claimer is
// never taken for dead.
func TestClusterLongEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := newFakeCluster()
		a, b, c := startNode(t, fc, "a"), startNode(t, fc, "b"), startNode(t, fc, "c")
		const n = 40
		for i := range n {
			a.h.testJoin(t, &Grant{Subject: fmt.Sprint("s", i)}, fmt.Sprint("https://example.com/", i))
		}
		synctest.Wait()
		fc.mu.Lock()
		fc.deleteDelay = testLease / 4 // n deletes: ten leases
		fc.mu.Unlock()
		a.kill()
		time.Sleep(15 * testLease)
		synctest.Wait()
		if got := leaves(b.h) + leaves(c.h); got != n {
			t.Fatalf("%v ends announced for the dead node's %d subscriptions", got, n)
		}
		if got := fc.nodes(); !slices.Equal(got, []string{"b", "c"}) {
			t.Fatalf("nodes after the long end: %v", got)
		}
	})
}

// A disconnect of one subscriber asked on a node that does not serve it
// reaches the node that does, within a quarter of a lease: its stream
// ends, and its end is announced at once. Another subscriber's stream on
// that node goes on.
func TestClusterKick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := newFakeCluster()
		a, b := startNodeGrace(t, fc, "a", time.Minute), startNodeGrace(t, fc, "b", time.Minute)
		synctest.Wait()
		serve := func(subject string) (*presenceConn, chan error) {
			m, err := b.h.hub.Matchers().Get(hub.MatchExact, "https://example.com/x", b.h.base)
			if err != nil {
				t.Fatal(err)
			}
			s, err := b.h.hub.Subscribe(t.Context(), hub.SubscribeOptions{Matchers: []*hub.Matcher{m}})
			if err != nil {
				t.Fatal(err)
			}
			pc, err := b.h.presence.join(t.Context(), &Grant{Subject: subject, Issuer: "herald"}, []*hub.Matcher{m}, s)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				err := s.Serve(t.Context(), discard{})
				b.h.presence.leave(pc)
				done <- err
			}()
			return pc, done
		}
		ann, annDone := serve("ann")
		_, bobDone := serve("bob")
		synctest.Wait()

		ended, asked, err := a.h.DisconnectSubscriber(t.Context(), ann.id)
		if err != nil || ended || !asked {
			t.Fatalf("DisconnectSubscriber on a node without it = %v, %v, %v; want asked", ended, asked, err)
		}
		time.Sleep(testLease / 4)
		synctest.Wait()
		select {
		case err := <-annDone:
			if !errors.Is(err, hub.ErrDisconnected) {
				t.Fatalf("ann's stream ended with %v, want ErrDisconnected", err)
			}
		default:
			t.Fatal("ann's stream on b still runs a quarter of a lease after the disconnect")
		}
		if got := leaves(b.h); got != 1 {
			t.Fatalf("b announced %v ends, want ann's at once (no grace period)", got)
		}
		if len(bobDone) != 0 {
			t.Fatalf("bob's stream ended: %v", <-bobDone)
		}
		// Unknown nowhere but asked: no node ends anything.
		if ended, asked, err := b.h.DisconnectSubscriber(t.Context(), "urn:uuid:nobody"); ended || !asked || err != nil {
			t.Fatalf("DisconnectSubscriber of nobody = %v, %v, %v", ended, asked, err)
		}
		time.Sleep(testLease / 2)
		synctest.Wait()
		if len(bobDone) != 0 || leaves(b.h) != 1 {
			t.Fatal("a disconnect of nobody ended something")
		}
	})
}

// discard is a hub.Stream that drops everything.
type discard struct{}

func (discard) Write(p []byte) (int, error)      { return len(p), nil }
func (discard) Flush() error                     { return nil }
func (discard) SetWriteDeadline(time.Time) error { return nil }

// A node that stops cleanly forgets itself: nobody has anything of it to
// end, and its lease is not renewed after.
func TestClusterCleanStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := newFakeCluster()
		a, b := startNode(t, fc, "a"), startNode(t, fc, "b")
		pc := a.h.testJoin(t, &Grant{Subject: "ann"}, "https://example.com/x")
		synctest.Wait()
		a.h.presence.leave(pc)
		a.h.Close(context.Background())
		time.Sleep(3 * testLease)
		synctest.Wait()
		if got := fc.nodes(); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("nodes after a stopped: %v", got)
		}
		if got := leaves(b.h); got != 0 {
			t.Fatalf("b announced %v ends of a node that stopped cleanly", got)
		}
	})
}

// A node paused for longer than its lease is taken for dead and ended by
// another; when it comes back it finds itself forgotten, and records and
// announces its subscriptions again.
func TestClusterNodeBackFromThePause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := newFakeCluster()
		a, b := startNode(t, fc, "a"), startNode(t, fc, "b")
		a.h.testJoin(t, &Grant{Subject: "ann"}, "https://example.com/x")
		synctest.Wait()
		a.kill() // paused: no renewals, its streams still open
		time.Sleep(2 * testLease)
		synctest.Wait()
		if got := leaves(b.h); got != 1 {
			t.Fatalf("b announced %v ends of the paused node, want 1", got)
		}
		if es, _ := b.h.presence.snapshot(t.Context(), form8, all); len(es) != 0 {
			t.Fatalf("the paused node's subscription still listed: %+v", es)
		}
		begins := func() float64 { return testutil.ToFloat64(a.h.presence.events.WithLabelValues("true", "published")) }
		before := begins()
		// It wakes up.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); a.h.Run(ctx) }()
		defer func() { cancel(); <-done }()
		synctest.Wait()
		if es, _ := b.h.presence.snapshot(t.Context(), form8, all); len(es) != 1 {
			t.Fatalf("after the node came back, the cluster lists %d subscriptions, want its 1", len(es))
		}
		if got := begins() - before; got != 1 {
			t.Fatalf("the node announced %v beginnings on its return, want 1", got)
		}
	})
}

// startNodeKept is startNode with a file for subscribers kept across a
// restart, and a memory engine the caller gives (the history outlives the
// node).
func startNodeKept(t *testing.T, fc *fakeCluster, eng *memory.Engine, name, file string) *clusterNode {
	t.Helper()
	return startNodeKeptGrace(t, fc, eng, name, file, time.Minute)
}

func startNodeKeptGrace(t *testing.T, fc *fakeCluster, eng *memory.Engine, name, file string, grace time.Duration) *clusterNode {
	t.Helper()
	hb, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ParseKey("subscriber-secret-subscriber-secret-01", nil)
	v, _ := NewValidator(TokenConfig{SubscriberKey: key, Issuer: "herald", Audience: presenceTestBase, Draft8: true, Base: presenceTestBase})
	public, _ := url.Parse(presenceTestBase)
	h, err := New(Config{Hub: hb, Tokens: v, PublicURL: public, Draft8: true, Subscriptions: true, SubscriptionGrace: grace,
		Cluster: fc, Node: name, Lease: testLease, PresenceFile: file})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &clusterNode{h: h, stop: cancel, done: make(chan struct{})}
	go func() { defer close(n.done); h.Run(ctx) }()
	t.Cleanup(func() {
		n.kill()
		hb.Close()
	})
	return n
}

// A node of a cluster that restarts keeps its subscribers and its name:
// back within a lease, it takes both up and nothing is announced; back
// later, another node has ended them, and it announces them again.
func TestClusterKeptAcrossRestart(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(map[bool]string{false: "in time", true: "late"}[late], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fc := newFakeCluster()
				b := startNode(t, fc, "b")
				eng := memory.New(memory.Options{})
				defer eng.Close()
				file := filepath.Join(t.TempDir(), "subscriptions.json")
				a := startNodeKept(t, fc, eng, "a-1", file)
				ann := &Grant{Subject: "ann", Issuer: "herald"}
				pc := a.h.testJoin(t, ann, "https://example.com/x")
				synctest.Wait()
				a.h.presence.leave(pc) // the shutdown ends the stream
				a.h.Close(context.Background())
				a.kill()
				if got := fc.nodes(); !slices.Contains(got, "a-1") {
					t.Fatalf("the stopping node forgot itself though it kept a subscriber: %v", got)
				}
				if late {
					time.Sleep(2 * testLease)
					synctest.Wait()
					if got := leaves(b.h); got != 1 {
						t.Fatalf("b announced %v ends of the node that stayed away, want 1", got)
					}
				}
				a2 := startNodeKept(t, fc, eng, "a-2", file)
				synctest.Wait()
				if a2.h.node != "a-1" {
					t.Fatalf("the restarted node is %q, want its old name a-1", a2.h.node)
				}
				if back := a2.h.testJoin(t, ann, "https://example.com/x"); back.id != pc.id {
					t.Fatalf("ann came back as %s, was %s", back.id, pc.id)
				}
				begins := testutil.ToFloat64(a2.h.presence.events.WithLabelValues("true", "published"))
				want := 0.0
				if late {
					want = 1 // its end was announced: it begins again
				}
				if begins != want {
					t.Fatalf("the restarted node announced %v beginnings, want %v", begins, want)
				}
				time.Sleep(3 * testLease)
				synctest.Wait()
				wantEnds := 0.0
				if late {
					wantEnds = 1
				}
				if got := leaves(b.h) + leaves(a2.h); got != wantEnds {
					t.Fatalf("ends announced in all: %v, want %v", got, wantEnds)
				}
				if es, _ := b.h.presence.snapshot(t.Context(), form8, all); len(es) != 1 {
					t.Fatalf("the cluster lists %d subscriptions, want ann's", len(es))
				}
			})
		})
	}
}

// startNodeGrace is startNode with a grace period.
func startNodeGrace(t *testing.T, fc *fakeCluster, name string, grace time.Duration) *clusterNode {
	t.Helper()
	eng := memory.New(memory.Options{})
	t.Cleanup(func() { _ = eng.Close() })
	return startNodeKeptGrace(t, fc, eng, name, "", grace)
}

// A subscriber that leaves one node and comes back to another within its
// grace period keeps its identifier there, its record moves, and nothing
// is announced by either node; one that came back to the node it left
// cannot be taken over by another.
func TestClusterTakeOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := newFakeCluster()
		a, b := startNodeGrace(t, fc, "a", time.Minute), startNodeGrace(t, fc, "b", time.Minute)
		synctest.Wait()
		ann := &Grant{Subject: "ann", Issuer: "herald"}
		pc := a.h.testJoin(t, ann, "https://example.com/x")
		a.h.presence.leave(pc)
		back := b.h.testJoin(t, ann, "https://example.com/x")
		if back.id != pc.id {
			t.Fatalf("ann came back to b as %s, left a as %s", back.id, pc.id)
		}
		begins := func(n *clusterNode) float64 {
			return testutil.ToFloat64(n.h.presence.events.WithLabelValues("true", "published"))
		}
		if got := begins(b); got != 0 {
			t.Fatalf("b announced %v beginnings for a returning subscriber", got)
		}
		es, _ := b.h.presence.snapshot(t.Context(), form8, all)
		if len(es) != 1 || es[0].subscriber != pc.id {
			t.Fatalf("the cluster lists %+v", es)
		}
		if got := len(fc.presence["a"]); got != 0 {
			t.Fatalf("a still has %d records of the subscriber b took over", got)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got := leaves(a.h) + leaves(b.h); got != 0 {
			t.Fatalf("%v ends announced for a subscriber that lives on b", got)
		}

		// Bob leaves a and comes back to a: b cannot take him.
		bob := &Grant{Subject: "bob", Issuer: "herald"}
		p1 := a.h.testJoin(t, bob, "https://example.com/y")
		a.h.presence.leave(p1)
		if again := a.h.testJoin(t, bob, "https://example.com/y"); again.id != p1.id {
			t.Fatal("bob not recognized on the node he left")
		}
		if other := b.h.testJoin(t, bob, "https://example.com/y"); other.id == p1.id {
			t.Fatal("b took over a subscriber connected to a")
		}
	})
}
