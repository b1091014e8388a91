package redis

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/internal/redistest"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the randomized tests (0: from the clock)")

// seed returns the seed of a randomized test and prints it, so that a
// failure can be replayed with -seed.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -seed=%d)", s, s)
	return s
}

// long is a lease or claim that outlasts any test.
const long = time.Minute

// oddName is a node name with bytes that mean something elsewhere: a hash
// tag, key separators, a newline, spaces, non-ASCII.
const oddName = "{node}:1 \n\xff é}"

// openNode opens an engine that a node would use for hub.Cluster, on the
// keys under prefix.
func openNode(t *testing.T, url, prefix string, opts Options) *Engine {
	t.Helper()
	opts.Prefix = prefix
	e, err := Open(t.Context(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func renew(t *testing.T, e *Engine, node, info string, ttl time.Duration) {
	t.Helper()
	if _, err := e.Renew(t.Context(), node, []byte(info), ttl); err != nil {
		t.Fatalf("Renew(%q): %v", node, err)
	}
}

func presenceSet(t *testing.T, e *Engine, node, id, doc string) {
	t.Helper()
	if err := e.PresenceSet(t.Context(), node, id, []byte(doc)); err != nil {
		t.Fatalf("PresenceSet(%q, %q): %v", node, id, err)
	}
}

func claim(t *testing.T, e *Engine, node, by string, ttl time.Duration) bool {
	t.Helper()
	ok, err := e.Claim(t.Context(), node, by, ttl)
	if err != nil {
		t.Fatalf("Claim(%q, by %q): %v", node, by, err)
	}
	return ok
}

// nodeStates returns Nodes as "name:info:alive" strings, in its order.
func nodeStates(t *testing.T, e *Engine) []string {
	t.Helper()
	ns, err := e.Nodes(t.Context())
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = fmt.Sprintf("%s:%s:%v", n.Name, n.Info, n.Alive)
	}
	return out
}

func alive(t *testing.T, e *Engine, node string) bool {
	t.Helper()
	ns, err := e.Nodes(t.Context())
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	for _, n := range ns {
		if n.Name == node {
			return n.Alive
		}
	}
	t.Fatalf("node %q not registered", node)
	return false
}

// strs renders a presence map for comparison.
func strs(m map[string][]byte) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func wantPresence(t *testing.T, what string, got map[string][]byte, err error, want map[string]string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !maps.Equal(strs(got), want) {
		t.Fatalf("%s = %q, want %q", what, strs(got), want)
	}
}

// TestPresence: subscriptions recorded under each node are read back by
// node and all together, from another node's engine too; a record
// replaces the earlier one; deleting what is not there is no error.
func TestPresence(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "pres", Options{})
	other := openNode(t, srv.URL(), "pres", Options{})

	got, err := e.PresenceList(t.Context())
	wantPresence(t, "PresenceList of nothing", got, err, map[string]string{})

	renew(t, e, "a", "", long)
	renew(t, other, oddName, "", long)
	presenceSet(t, e, "a", "sub/1", `{"v":1}`)
	presenceSet(t, e, "a", "sub/2", `{"v":2}`)
	presenceSet(t, other, oddName, "sub/3", "\x00binary\xff")
	presenceSet(t, e, "a", "sub/1", `{"v":"1b"}`) // replaces
	// A node not registered yet (no Renew): PresenceOf finds its
	// subscriptions, PresenceList, which lists known nodes, does not.
	presenceSet(t, e, "unregistered", "sub/4", "x")

	all := map[string]string{"sub/1": `{"v":"1b"}`, "sub/2": `{"v":2}`, "sub/3": "\x00binary\xff"}
	for _, x := range []*Engine{e, other} {
		got, err := x.PresenceList(t.Context())
		wantPresence(t, "PresenceList", got, err, all)
	}
	got, err = other.PresenceOf(t.Context(), "a")
	wantPresence(t, "PresenceOf(a)", got, err, map[string]string{"sub/1": `{"v":"1b"}`, "sub/2": `{"v":2}`})
	got, err = e.PresenceOf(t.Context(), oddName)
	wantPresence(t, "PresenceOf(odd)", got, err, map[string]string{"sub/3": "\x00binary\xff"})
	got, err = e.PresenceOf(t.Context(), "unregistered")
	wantPresence(t, "PresenceOf(unregistered)", got, err, map[string]string{"sub/4": "x"})
	got, err = e.PresenceOf(t.Context(), "nobody")
	wantPresence(t, "PresenceOf(nobody)", got, err, map[string]string{})

	// The layout other tools may read.
	if v := srv.Do(t, "HGET", "{pres}:presence:a", "sub/1"); v != `{"v":"1b"}` {
		t.Errorf("HGET {pres}:presence:a sub/1 = %q", v)
	}

	for _, del := range [][2]string{{"a", "sub/2"}, {"a", "sub/missing"}, {"nobody", "sub/1"}, {oddName, "sub/3"}} {
		if err := other.PresenceDelete(t.Context(), del[0], del[1]); err != nil {
			t.Fatalf("PresenceDelete(%q, %q): %v", del[0], del[1], err)
		}
	}
	got, err = e.PresenceList(t.Context())
	wantPresence(t, "PresenceList after deletes", got, err, map[string]string{"sub/1": `{"v":"1b"}`})
	got, err = e.PresenceOf(t.Context(), oddName)
	wantPresence(t, "PresenceOf(odd) after its delete", got, err, map[string]string{})
}

// TestPresenceLimit: PresenceList refuses to read more than MaxPresence
// subscriptions, and reads them again once they are few enough.
func TestPresenceLimit(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "limit", Options{MaxPresence: 3})
	for _, n := range []string{"a", "b"} {
		renew(t, e, n, "", long)
		presenceSet(t, e, n, n+"/1", "1")
		presenceSet(t, e, n, n+"/2", "2")
	}
	if got, err := e.PresenceList(t.Context()); !errors.Is(err, ErrTooMany) {
		t.Fatalf("PresenceList of 4 with MaxPresence 3 = %q, %v; want ErrTooMany", strs(got), err)
	} else if !strings.Contains(err.Error(), "4 recorded") {
		t.Errorf("the error does not say how many: %v", err)
	}
	// The node that ends a node reads all of it whatever the bound.
	got, err := e.PresenceOf(t.Context(), "a")
	wantPresence(t, "PresenceOf(a)", got, err, map[string]string{"a/1": "1", "a/2": "2"})
	if err := e.PresenceDelete(t.Context(), "b", "b/2"); err != nil {
		t.Fatal(err)
	}
	got, err = e.PresenceList(t.Context())
	wantPresence(t, "PresenceList of 3", got, err, map[string]string{"a/1": "1", "a/2": "2", "b/1": "1"})
}

// TestPresenceLarge: a node with more than a page of subscriptions is
// read a page at a time, beside nodes with few, read together; nothing is
// lost nor mixed up.
func TestPresenceLarge(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "large", Options{})
	want := map[string]string{}
	big := 2*presencePage + 500
	_, err := e.rdb.Pipelined(t.Context(), func(p goredis.Pipeliner) error {
		for i := range big {
			id := fmt.Sprintf("big/%d", i)
			p.HSet(t.Context(), e.keys.presence+"big", id, "doc "+id)
			want[id] = "doc " + id
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	renew(t, e, "big", "", long)
	for _, n := range []string{"s1", "s2", "s3"} {
		renew(t, e, n, "", long)
		for i := range 3 {
			id := fmt.Sprintf("%s/%d", n, i)
			presenceSet(t, e, n, id, "doc "+id)
			want[id] = "doc " + id
		}
	}
	renew(t, e, "empty", "", long)
	got, err := e.PresenceList(t.Context())
	wantPresence(t, "PresenceList", got, err, want)
	got, err = e.PresenceOf(t.Context(), "big")
	if err != nil || len(got) != big || string(got["big/1234"]) != "doc big/1234" {
		t.Fatalf("PresenceOf(big) = %d entries, big/1234 %q, %v; want %d", len(got), got["big/1234"], err, big)
	}
	if n := histCount(e.m.rttOps["presence_of"]); n < 3 {
		t.Errorf("PresenceOf(big) took %d round trips, want a page each", n)
	}
}

// TestLease: renewed nodes are listed, sorted, with their info and alive;
// a node whose lease runs out stays listed, dead, until forgotten; a
// renewal brings it back.
func TestLease(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "lease", Options{})
	other := openNode(t, srv.URL(), "lease", Options{})
	renew(t, e, "b", "b1", long)
	renew(t, other, "c", "c1", long)
	renew(t, e, "a", "a1", long)
	renew(t, e, "b", "b2", long) // new info
	want := []string{"a:a1:true", "b:b2:true", "c:c1:true"}
	if got := nodeStates(t, other); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Nodes = %q, want %q", got, want)
	}
	if ms := srv.Do(t, "PTTL", "{lease}:lease:b"); ms == "-1" || ms == "-2" || strings.HasPrefix(ms, "ERR") {
		t.Fatalf("PTTL of b's lease = %s, want an expiry", ms)
	}

	renew(t, e, "b", "b3", 300*time.Millisecond)
	waitFor(t, "b's lease runs out", func() bool { return !alive(t, other, "b") })
	want = []string{"a:a1:true", "b:b3:false", "c:c1:true"}
	if got := nodeStates(t, other); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Nodes after b's lease ran out = %q, want %q", got, want)
	}
	renew(t, e, "b", "b4", long)
	want = []string{"a:a1:true", "b:b4:true", "c:c1:true"}
	if got := nodeStates(t, other); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Nodes after b renewed = %q, want %q", got, want)
	}
}

// kill makes node dead: registered, with a lease that has run out.
func kill(t *testing.T, e *Engine, node string) {
	t.Helper()
	renew(t, e, node, "", time.Millisecond)
	waitFor(t, node+"'s lease runs out", func() bool { return !alive(t, e, node) })
}

// TestClaimRefused: no claim on a node whose lease runs, nor on a node
// never registered or forgotten; one claimer only while a claim lasts.
func TestClaimRefused(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "claim", Options{})
	renew(t, e, "n", "", long)
	if claim(t, e, "n", "x", long) {
		t.Fatal("claimed a node whose lease runs")
	}
	if claim(t, e, "never", "x", long) {
		t.Fatal("claimed a node never registered")
	}
	kill(t, e, "n")
	if !claim(t, e, "n", "x", long) {
		t.Fatal("no claim on a dead node")
	}
	if claim(t, e, "n", "y", long) {
		t.Fatal("y claimed a node already claimed by x")
	}
	srv.Do(t, "PEXPIRE", "{claim}:claim:n", "5000")
	if !claim(t, e, "n", "x", long) {
		t.Fatal("x could not extend its own claim")
	}
	if ms, _ := strconv.Atoi(srv.Do(t, "PTTL", "{claim}:claim:n")); ms <= 5000 {
		t.Errorf("x's claim again: %d ms left, want it extended to %v", ms, long)
	}
	if v := srv.Do(t, "GET", "{claim}:claim:n"); v != "x" {
		t.Errorf("the claim names %q, want x", v)
	}
	if err := e.Forget(t.Context(), "n"); err != nil {
		t.Fatal(err)
	}
	if claim(t, e, "n", "z", long) {
		t.Fatal("claimed a forgotten node")
	}
}

// TestClaimExpires: a claim that runs out (its claimer died before
// forgetting the node) lets another node claim.
func TestClaimExpires(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "expires", Options{})
	kill(t, e, "n")
	if !claim(t, e, "n", "x", 300*time.Millisecond) {
		t.Fatal("no claim on a dead node")
	}
	waitFor(t, "y claims once x's claim runs out", func() bool { return claim(t, e, "n", "y", long) })
	if v := srv.Do(t, "GET", "{expires}:claim:n"); v != "y" {
		t.Errorf("the claim names %q, want y", v)
	}
	if claim(t, e, "n", "x", long) {
		t.Fatal("x claimed again while y's claim lasts")
	}
}

// TestClaimOneWinner: many nodes (engines of their own, and goroutines
// sharing one) claim the same dead node at once; exactly one wins, and the
// claim names it. Rounds vary the claimers, the engines they use and how
// their starts spread.
func TestClaimOneWinner(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0))
	srv := redistest.Start(t, redistest.Options{})
	engines := make([]*Engine, 6)
	for i := range engines {
		engines[i] = openNode(t, srv.URL(), "race", Options{})
	}
	for round := range 25 {
		dead := fmt.Sprintf("dead-%d", round)
		kill(t, engines[0], dead)
		n := 2 + rng.IntN(15)
		type claimer struct {
			e      *Engine
			by     string
			jitter time.Duration
		}
		cs := make([]claimer, n)
		spread := time.Duration(rng.IntN(3)) * 200 * time.Microsecond // 0: all at once
		for i := range cs {
			cs[i] = claimer{e: engines[rng.IntN(len(engines))], by: fmt.Sprintf("node-%d", i)}
			if spread > 0 {
				cs[i].jitter = time.Duration(rng.Int64N(int64(spread)))
			}
		}
		var (
			wg      sync.WaitGroup
			winners atomic.Int32
			winner  atomic.Value
			errs    = make(chan error, n)
			start   = make(chan struct{})
		)
		for _, c := range cs {
			wg.Go(func() {
				<-start
				time.Sleep(c.jitter)
				ok, err := c.e.Claim(t.Context(), dead, c.by, long)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					winners.Add(1)
					winner.Store(c.by)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: Claim: %v", round, err)
		}
		if w := winners.Load(); w != 1 {
			t.Fatalf("round %d: %d of %d claimers won, want exactly 1", round, w, n)
		}
		if v := srv.Do(t, "GET", "{race}:claim:"+dead); v != winner.Load() {
			t.Fatalf("round %d: the claim names %q, the winner was %q", round, v, winner.Load())
		}
	}
}

// TestClusterForget: Forget removes a node's record, lease, subscriptions
// and claim, and nothing of another node, even one whose name starts with
// the forgotten one's.
func TestClusterForget(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "forget", Options{})
	for _, n := range []string{"n", "n:x"} {
		renew(t, e, n, "info", long)
		presenceSet(t, e, n, n+"/sub", "doc")
	}
	kill(t, e, "n")
	if !claim(t, e, "n", "x", long) {
		t.Fatal("no claim on a dead node")
	}
	keysOf := func(n string) []string {
		return []string{"{forget}:lease:" + n, "{forget}:presence:" + n, "{forget}:claim:" + n}
	}
	if got := srv.Do(t, append([]string{"EXISTS"}, keysOf("n")[1:]...)...); got != "2" {
		t.Fatalf("before Forget: %s of n's presence and claim exist", got)
	}
	if err := e.Forget(t.Context(), "n"); err != nil {
		t.Fatal(err)
	}
	if got := srv.Do(t, append([]string{"EXISTS"}, keysOf("n")...)...); got != "0" {
		t.Errorf("after Forget: %s of n's keys remain", got)
	}
	if got := srv.Do(t, "HEXISTS", "{forget}:nodes", "n"); got != "0" {
		t.Errorf("after Forget: n still in the nodes hash")
	}
	if got := srv.Do(t, append([]string{"EXISTS"}, keysOf("n:x")[:2]...)...); got != "2" {
		t.Errorf("Forget(n) removed keys of n:x: %s of 2 remain", got)
	}
	if got := nodeStates(t, e); fmt.Sprint(got) != "[n:x:info:true]" {
		t.Errorf("Nodes after Forget = %q", got)
	}
	got, err := e.PresenceList(t.Context())
	wantPresence(t, "PresenceList after Forget", got, err, map[string]string{"n:x/sub": "doc"})

	// A node forgets itself while alive; forgetting it again is no error.
	for range 2 {
		if err := e.Forget(t.Context(), "n:x"); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.Do(t, "EXISTS", "{forget}:nodes", "{forget}:lease:n:x", "{forget}:presence:n:x"); got != "0" {
		t.Errorf("after the last Forget: %s keys remain", got)
	}
}

// clock is a settable Options.Now.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestRevocations: revocations are shared, a later one for a subject
// replaces the earlier, and one is left out once its until has passed on
// the reader's clock, then deleted a while later.
func TestRevocations(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var clk clock
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
	clk.set(t0)
	e := openNode(t, srv.URL(), "rev", Options{Now: clk.now})
	other := openNode(t, srv.URL(), "rev", Options{Now: clk.now})

	revoke := func(sub string, at, until time.Time) {
		t.Helper()
		if err := e.Revoke(t.Context(), sub, at, until); err != nil {
			t.Fatalf("Revoke(%q): %v", sub, err)
		}
	}
	check := func(what string, want map[string]hub.Revocation) {
		t.Helper()
		got, err := other.Revocations(t.Context())
		if err != nil {
			t.Fatalf("%s: Revocations: %v", what, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: Revocations = %v, want %v", what, got, want)
		}
		for sub, w := range want {
			g, ok := got[sub]
			if !ok || !g.At.Equal(w.At) || !g.Until.Equal(w.Until) {
				t.Fatalf("%s: Revocations[%q] = %v, %v; want %v", what, sub, g, ok, w)
			}
		}
	}

	check("none", map[string]hub.Revocation{})
	revoke("alice", t0, t0.Add(time.Hour))
	revoke("bob", t0.Add(-time.Minute), t0.Add(10*time.Minute))
	revoke("carol", t0.Add(-time.Hour), t0.Add(-time.Second)) // already over
	check("revoked", map[string]hub.Revocation{
		"alice": {At: t0, Until: t0.Add(time.Hour)},
		"bob":   {At: t0.Add(-time.Minute), Until: t0.Add(10 * time.Minute)},
	})
	// A later revocation of alice replaces the earlier, even a shorter one.
	revoke("alice", t0.Add(time.Minute), t0.Add(5*time.Minute))
	want := map[string]hub.Revocation{
		"alice": {At: t0.Add(time.Minute), Until: t0.Add(5 * time.Minute)},
		"bob":   {At: t0.Add(-time.Minute), Until: t0.Add(10 * time.Minute)},
	}
	check("replaced", want)

	clk.set(t0.Add(5 * time.Minute)) // alice's until: over
	delete(want, "alice")
	check("alice's ended", want)
	if got := srv.Do(t, "HEXISTS", "{rev}:revoked", "alice"); got != "1" {
		t.Errorf("alice's revocation deleted the moment it ended: other clocks may be behind")
	}
	clk.advance(revokedKeep + time.Millisecond)
	check("alice's ended a while ago", want)
	if got := srv.Do(t, "HEXISTS", "{rev}:revoked", "alice"); got != "0" {
		t.Errorf("alice's revocation still stored %v after it ended", revokedKeep)
	}

	// An entry that cannot be read is dropped, not reported as an error
	// forever.
	srv.Do(t, "HSET", "{rev}:revoked", "mallory", "not a revocation")
	check("with a corrupt entry", want)
	if got := srv.Do(t, "HEXISTS", "{rev}:revoked", "mallory"); got != "0" {
		t.Errorf("the corrupt entry was kept")
	}
}

// TestClusterClosed: a closed engine refuses every call with ErrClosed.
func TestClusterClosed(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "closed", Options{})
	renew(t, e, "n", "", long)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	calls := map[string]func() error{
		"PresenceSet":    func() error { return e.PresenceSet(ctx, "n", "id", nil) },
		"PresenceDelete": func() error { return e.PresenceDelete(ctx, "n", "id") },
		"PresenceList":   func() error { _, err := e.PresenceList(ctx); return err },
		"PresenceOf":     func() error { _, err := e.PresenceOf(ctx, "n"); return err },
		"Renew":          func() error { _, err := e.Renew(ctx, "n", nil, long); return err },
		"Nodes":          func() error { _, err := e.Nodes(ctx); return err },
		"Claim":          func() error { _, err := e.Claim(ctx, "n", "x", long); return err },
		"Forget":         func() error { return e.Forget(ctx, "n") },
		"Revoke":         func() error { return e.Revoke(ctx, "s", time.Now(), time.Now().Add(long)) },
		"Revocations":    func() error { _, err := e.Revocations(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, hub.ErrClosed) {
			t.Errorf("%s on a closed engine = %v, want ErrClosed", name, err)
		}
	}
	// Nothing reached Redis: n is still there as it was.
	if got := srv.Do(t, "EXISTS", "{closed}:lease:n"); got != "1" {
		t.Errorf("n's lease: EXISTS = %s", got)
	}
}

// TestClusterBadInput: names no node may have and ttls that are not
// positive are refused with a message, and nothing is written.
func TestClusterBadInput(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "bad", Options{})
	ctx := t.Context()
	for _, name := range []string{"", "a\x00b"} {
		calls := map[string]func() error{
			"PresenceSet":    func() error { return e.PresenceSet(ctx, name, "id", nil) },
			"PresenceDelete": func() error { return e.PresenceDelete(ctx, name, "id") },
			"PresenceOf":     func() error { _, err := e.PresenceOf(ctx, name); return err },
			"Renew":          func() error { _, err := e.Renew(ctx, name, nil, long); return err },
			"Claim":          func() error { _, err := e.Claim(ctx, name, "x", long); return err },
			"Claim by":       func() error { _, err := e.Claim(ctx, "x", name, long); return err },
			"Forget":         func() error { return e.Forget(ctx, name) },
		}
		for call, f := range calls {
			if err := f(); err == nil || !strings.Contains(err.Error(), "node name") {
				t.Errorf("%s(%q) = %v, want a node name error", call, name, err)
			}
		}
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := e.Renew(ctx, "n", nil, ttl); err == nil || !strings.Contains(err.Error(), "ttl") {
			t.Errorf("Renew with ttl %v = %v, want a ttl error", ttl, err)
		}
		if _, err := e.Claim(ctx, "n", "x", ttl); err == nil || !strings.Contains(err.Error(), "ttl") {
			t.Errorf("Claim with ttl %v = %v, want a ttl error", ttl, err)
		}
	}
	if got := srv.Do(t, "DBSIZE"); got != "0" {
		t.Errorf("bad calls wrote %s keys", got)
	}
	// Under a millisecond rounds up: the lease is there.
	renew(t, e, "n", "", time.Microsecond)
	if got := srv.Do(t, "HEXISTS", "{bad}:nodes", "n"); got != "1" {
		t.Errorf("Renew with 1µs did not register n")
	}
}

// TestClusterKeySlot: on a Redis Cluster every key of the shared state is
// in the log's slot, whatever the node names hold, so that the scripts
// that touch several of them run.
func TestClusterKeySlot(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	url := "redis+cluster" + c.URL()[len("redis"):]
	e := openNode(t, url, "slot", Options{})
	ctx := t.Context()
	names := []string{"alive", oddName}
	for _, n := range names {
		renew(t, e, n, "info", long)
		presenceSet(t, e, n, n+"/sub", "doc")
	}
	kill(t, e, "dead")
	presenceSet(t, e, "dead", "dead/sub", "doc")
	if !claim(t, e, "dead", "alive", long) {
		t.Fatal("no claim on a dead node")
	}
	if err := e.Revoke(ctx, "sub", time.Now(), time.Now().Add(long)); err != nil {
		t.Fatal(err)
	}
	got, err := e.PresenceList(ctx)
	wantPresence(t, "PresenceList", got, err, map[string]string{"alive/sub": "doc", oddName + "/sub": "doc", "dead/sub": "doc"})
	got, err = e.PresenceOf(ctx, oddName)
	wantPresence(t, "PresenceOf", got, err, map[string]string{oddName + "/sub": "doc"})
	want := fmt.Sprint([]string{"alive:info:true", "dead::false", oddName + ":info:true"})
	if got := nodeStates(t, e); fmt.Sprint(got) != want {
		t.Fatalf("Nodes = %q, want %s", got, want)
	}
	if rs, err := e.Revocations(ctx); err != nil || len(rs) != 1 {
		t.Fatalf("Revocations = %v, %v", rs, err)
	}

	ks := []string{e.keys.nodes, e.keys.revoked, e.keys.claim + "dead", e.keys.presence + "dead"}
	for _, n := range names {
		ks = append(ks, e.keys.lease+n, e.keys.presence+n)
	}
	owner := c.NodeFor(t, e.keys.log)
	slot := owner.Do(t, "CLUSTER", "KEYSLOT", e.keys.log)
	for _, k := range ks {
		if s := owner.Do(t, "CLUSTER", "KEYSLOT", k); s != slot {
			t.Errorf("key %q in slot %s, the log in %s", k, s, slot)
		}
		if got := owner.Do(t, "EXISTS", k); got != "1" {
			t.Errorf("EXISTS %q on the slot's owner = %s", k, got)
		}
	}
	if err := e.Forget(ctx, "dead"); err != nil {
		t.Fatal(err)
	}
	if got := owner.Do(t, "EXISTS", e.keys.claim+"dead", e.keys.presence+"dead"); got != "0" {
		t.Errorf("after Forget: %s of dead's keys remain", got)
	}
}

// Renew says when the node was not registered: at its first renewal, and
// at the first after it was forgotten, when it must record its
// subscriptions again.
func TestRenewFresh(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := openNode(t, srv.URL(), "fresh", Options{})
	ctx := t.Context()
	for i, want := range []bool{true, false, false} {
		fresh, err := e.Renew(ctx, "n", nil, long)
		if err != nil || fresh != want {
			t.Fatalf("renewal %d: fresh %v, %v; want %v", i, fresh, err, want)
		}
	}
	if err := e.Forget(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if fresh, err := e.Renew(ctx, "n", nil, long); err != nil || !fresh {
		t.Fatalf("renewal after Forget: fresh %v, %v; want true", fresh, err)
	}
}

// Park, TakeParked and Unpark: a parked subscriber is taken once, not by
// its own node, not from a node whose lease ran out, not after its period;
// Unpark says whether it was still there.
func TestParked(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := openNode(t, srv.URL(), "park", Options{})
	b := openNode(t, srv.URL(), "park", Options{})
	ctx := t.Context()
	renew(t, a, "a", "", long)
	renew(t, b, "b", "", long)
	const key = `"herald" "ann" 0 "exact" "https://example.com/x"`
	if err := a.Park(ctx, key, "a", "id1", time.Now().Add(long)); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := a.TakeParked(ctx, key, "a"); err != nil || ok {
		t.Fatalf("its own node took it: %v %v", ok, err)
	}
	node, id, ok, err := b.TakeParked(ctx, key, "b")
	if err != nil || !ok || node != "a" || id != "id1" {
		t.Fatalf("take: %q %q %v %v", node, id, ok, err)
	}
	if _, _, ok, _ := b.TakeParked(ctx, key, "b"); ok {
		t.Fatal("taken twice")
	}
	if still, err := a.Unpark(ctx, key, "a", "id1"); err != nil || still {
		t.Fatalf("unpark after it was taken: %v %v", still, err)
	}

	// Unpark of one still there removes it.
	_ = a.Park(ctx, key, "a", "id2", time.Now().Add(long))
	if still, err := a.Unpark(ctx, key, "a", "id2"); err != nil || !still {
		t.Fatalf("unpark: %v %v", still, err)
	}
	if _, _, ok, _ := b.TakeParked(ctx, key, "b"); ok {
		t.Fatal("taken after it was unparked")
	}

	// An ended period, and a dead node's, are not taken.
	_ = a.Park(ctx, key, "a", "id3", time.Now().Add(-time.Second))
	renew(t, a, "dead", "", 200*time.Millisecond)
	_ = a.Park(ctx, key, "dead", "id4", time.Now().Add(long))
	deadline := time.Now().Add(10 * time.Second)
	for {
		ns, err := b.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(ns, func(n hub.NodeState) bool { return n.Name == "dead" }); i >= 0 && !ns[i].Alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease did not run out")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if node, id, ok, _ := b.TakeParked(ctx, key, "b"); ok {
		t.Fatalf("took %s of %s: ended or dead", id, node)
	}
}

// Among nodes racing to take one parked subscriber, one gets it.
func TestTakeParkedOneWinner(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, s))
	var engines []*Engine
	for range 4 {
		engines = append(engines, openNode(t, srv.URL(), "race", Options{}))
	}
	renew(t, engines[0], "owner", "", long)
	ctx := t.Context()
	for round := range 20 {
		key := fmt.Sprint("k", round)
		_ = engines[0].Park(ctx, key, "owner", "id", time.Now().Add(long))
		n := 2 + rng.IntN(8)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if _, _, ok, err := engines[i%len(engines)].TakeParked(ctx, key, fmt.Sprint("taker", i)); err == nil && ok {
					wins.Add(1)
				}
			})
		}
		wg.Go(func() {
			if ok, err := engines[0].Unpark(ctx, key, "owner", "id"); err == nil && ok {
				wins.Add(1)
			}
		})
		wg.Wait()
		if w := wins.Load(); w != 1 {
			t.Fatalf("round %d, %d takers and the owner: %d got it", round, n, w)
		}
	}
}

// TestKicks: kicks are shared between nodes, a later one for an id
// replaces the earlier, and one is left out once its until has passed,
// then deleted a while later.
func TestKicks(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var clk clock
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clk.set(t0)
	e := openNode(t, srv.URL(), "kick", Options{Now: clk.now})
	other := openNode(t, srv.URL(), "kick", Options{Now: clk.now})
	kick := func(id string, until time.Time) {
		t.Helper()
		if err := e.Kick(t.Context(), id, until); err != nil {
			t.Fatalf("Kick(%q): %v", id, err)
		}
	}
	check := func(what string, want map[string]time.Time) {
		t.Helper()
		got, err := other.Kicks(t.Context())
		if err != nil {
			t.Fatalf("%s: Kicks: %v", what, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: Kicks = %v, want %v", what, got, want)
		}
		for id, w := range want {
			if g, ok := got[id]; !ok || !g.Equal(w) {
				t.Fatalf("%s: Kicks[%q] = %v, %v; want %v", what, id, g, ok, w)
			}
		}
	}
	check("none", nil)
	kick("urn:uuid:1", t0.Add(time.Minute))
	kick("urn:uuid:2", t0.Add(-time.Second)) // over already
	check("kicked", map[string]time.Time{"urn:uuid:1": t0.Add(time.Minute)})
	kick("urn:uuid:1", t0.Add(2*time.Minute))
	check("replaced", map[string]time.Time{"urn:uuid:1": t0.Add(2 * time.Minute)})
	if _, err := other.Revocations(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := other.Revocations(t.Context()); len(got) != 0 {
		t.Fatalf("a kick shows as a revocation: %v", got)
	}
	clk.set(t0.Add(2 * time.Minute))
	check("ended", nil)
	if got := srv.Do(t, "HEXISTS", "{kick}:kicked", "urn:uuid:1"); got != "1" {
		t.Errorf("the kick was deleted the moment it ended: other clocks may be behind")
	}
	clk.advance(revokedKeep + time.Millisecond)
	check("ended a while ago", nil)
	if got := srv.Do(t, "HEXISTS", "{kick}:kicked", "urn:uuid:1"); got != "0" {
		t.Errorf("the kick is still stored %v after it ended", revokedKeep)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Kick(t.Context(), "x", t0); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Kick after Close = %v, want hub.ErrClosed", err)
	}
}
