package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-hub/herald/client"
	"github.com/herald-hub/herald/internal/nginxtest"
	"github.com/herald-hub/herald/internal/redistest"
)

// The multi-node tests run several herald processes on one real
// redis-server, as a deployment does: every node takes publishes, every
// node delivers every update in one global order, and a subscriber
// resumes on any node. The last one puts the nodes behind a real nginx
// with the shipped deploy/nginx/herald.conf and kills one of them.

const (
	// nodeSecret is the --jwt-key every node of a test shares.
	nodeSecret = "nodes-test-secret-b7f3c1d9e2a84f60a5c3d7e1f9b2c4d6"
	topicA     = "https://example.com/nodes/a"
	topicB     = "https://example.com/nodes/b"
	// nodesDeadline bounds each wait of these tests.
	nodesDeadline = 20 * time.Second
)

// nodeSet is a few herald processes sharing one history on Redis and one
// public URL, as nodes behind a load balancer do.
type nodeSet struct {
	nodes []*hubProcess
	token string // may publish on every topic, on every node
}

// startNodes starts a node on each of addrs with the Redis engine at
// redisURL and publicURL as the URL clients use.
func startNodes(t *testing.T, redisURL, publicURL string, addrs ...string) *nodeSet {
	t.Helper()
	work, logs := t.TempDir(), t.TempDir()
	ns := &nodeSet{}
	for _, addr := range addrs {
		ns.nodes = append(ns.nodes, startHub(t, work, logs, addr,
			"--engine", redisURL, "--jwt-key", nodeSecret, "--anonymous",
			"--public-url", publicURL))
	}
	ns.token = nodeToken(t, publicURL)
	return ns
}

// nodeToken runs `herald token` with the nodes' key for a token that may
// publish on every topic of the hub at publicURL.
func nodeToken(t *testing.T, publicURL string) string {
	t.Helper()
	return nodesTokenArgs(t, publicURL, "--publish", "*")
}

// hubClient returns a client of the hub at base (scheme and host) that
// reconnects fast, so that the tests do not wait on backoff.
func hubClient(t *testing.T, base, token string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{
		Hub:            base + "/.well-known/mercure",
		PublisherToken: token,
		MinBackoff:     20 * time.Millisecond,
		MaxBackoff:     300 * time.Millisecond,
		Breaker:        client.BreakerSettings{Disabled: true}, // a kill must not stop the publishers
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func nodeClient(t *testing.T, h *hubProcess, token string) *client.Client {
	return hubClient(t, "http://"+h.addr, token)
}

// sentinel is the data of the update that closes a test's publishing on
// topic: published after every other update was acknowledged, it comes
// after all of them in the global order, so a subscriber that received it
// has received everything it will ever get of that topic.
func sentinel(topic string) string { return "sentinel " + topic }

// recorder holds one subscription and keeps what it delivers.
type recorder struct {
	name   string
	topics []string
	sub    *client.Subscription

	mu      sync.Mutex
	events  []client.Event
	conns   []client.ConnectInfo
	missing map[string]bool // sentinels still to come
	done    chan struct{}   // closed once every sentinel came
	exited  chan struct{}   // closed once Events is closed and drained
}

// subscribe subscribes on c to topics, from lastID ("" for live), and
// records what arrives until the test ends or stop is called. Subscribe
// returns once the hub answered 200, so the subscription is registered:
// every update published from then on is for it.
func subscribe(t *testing.T, c *client.Client, name, lastID string, topics ...string) *recorder {
	t.Helper()
	r := &recorder{
		name: name, topics: topics, missing: map[string]bool{},
		done: make(chan struct{}), exited: make(chan struct{}),
	}
	for _, tp := range topics {
		r.missing[sentinel(tp)] = true
	}
	sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{
		Topics: topics, LastEventID: lastID, OnConnect: r.connected,
	})
	if err != nil {
		t.Fatalf("%s: subscribe: %v", name, err)
	}
	r.sub = sub
	go r.read()
	t.Cleanup(r.stop)
	return r
}

func (r *recorder) connected(ci client.ConnectInfo) {
	r.mu.Lock()
	r.conns = append(r.conns, ci)
	r.mu.Unlock()
}

func (r *recorder) read() {
	defer close(r.exited)
	for ev := range r.sub.Events() {
		r.mu.Lock()
		r.events = append(r.events, ev)
		if r.missing[ev.Data] {
			delete(r.missing, ev.Data)
			if len(r.missing) == 0 {
				close(r.done)
			}
		}
		r.mu.Unlock()
	}
}

// stop ends the subscription and returns once every event it delivered
// is recorded, so that sub.LastEventID is the id of the last one.
func (r *recorder) stop() {
	r.sub.Close()
	<-r.exited
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *recorder) snapshot() ([]client.Event, []client.ConnectInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), slices.Clone(r.conns)
}

// waitCount waits until r holds at least n events.
func (r *recorder) waitCount(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(nodesDeadline)
	for r.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d events after %v, waiting for %d", r.name, r.count(), nodesDeadline, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSentinels waits until every recorder received the sentinels of its
// topics.
func waitSentinels(t *testing.T, recs []*recorder) {
	t.Helper()
	timeout := time.After(nodesDeadline)
	for _, r := range recs {
		select {
		case <-r.done:
		case <-timeout:
			r.mu.Lock()
			n, missing := len(r.events), fmt.Sprint(r.missing)
			r.mu.Unlock()
			t.Fatalf("%s: no sentinel after %v (%d events, missing %s)", r.name, nodesDeadline, n, missing)
		}
	}
}

// update is one logical update a test published: its data is unique.
type update struct {
	data   string
	topics []string
	pub    int // the publisher
	rank   int // its place among that publisher's updates
}

// ledger is what a test published, for the checks.
type ledger struct {
	mu       sync.Mutex
	byData   map[string]update
	attempts map[string]int // publishes of an update whose outcome was unknown, plus the last one
}

func newLedger() *ledger {
	return &ledger{byData: map[string]update{}, attempts: map[string]int{}}
}

func (l *ledger) add(u update) {
	l.mu.Lock()
	l.byData[u.data] = u
	l.mu.Unlock()
}

func (l *ledger) ambiguous(data string) {
	l.mu.Lock()
	l.attempts[data]++
	l.mu.Unlock()
}

func (l *ledger) unknown(data string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.attempts[data] > 0
}

// forTopics reports whether an update on uts goes to a subscriber of sts.
func forTopics(uts, sts []string) bool {
	for _, u := range uts {
		if slices.Contains(sts, u) {
			return true
		}
	}
	return false
}

// checkDeliveries checks what every recorder received up to its last
// sentinel against the ledger: exactly the updates of its topics, each
// once (an update whose publish had an unknown outcome and was published
// again may come once per attempt), each publisher's updates in the order
// they were acknowledged, nothing after the sentinels, and, for every two
// recorders, the same sequence of the updates both should get. All
// updates are in one global order, so the last check is what proves it.
func checkDeliveries(t *testing.T, l *ledger, recs []*recorder) {
	t.Helper()
	seqs := make([][]string, len(recs))
	for i, r := range recs {
		evs, _ := r.snapshot()
		last := -1
		for j, ev := range evs {
			if strings.HasPrefix(ev.Data, "sentinel ") {
				last = j
			}
		}
		if extra := evs[last+1:]; len(extra) > 0 {
			t.Errorf("%s: %d events after its sentinels, first %q", r.name, len(extra), extra[0].Data)
		}
		seq := make([]string, 0, last+1)
		for _, ev := range evs[:last+1] {
			seq = append(seq, ev.Data)
		}
		seqs[i] = seq

		seen := map[string]int{}
		lastRank := map[int]int{}
		for _, d := range seq {
			seen[d]++
			if strings.HasPrefix(d, "sentinel ") {
				if seen[d] > 1 || !slices.Contains(r.topics, strings.TrimPrefix(d, "sentinel ")) {
					t.Errorf("%s: unexpected %q", r.name, d)
				}
				continue
			}
			u, ok := l.byData[d]
			switch {
			case !ok:
				t.Errorf("%s: got %q, which was never published", r.name, d)
				continue
			case !forTopics(u.topics, r.topics):
				t.Errorf("%s (topics %v): got %q of topics %v", r.name, r.topics, d, u.topics)
			case seen[d] > max(1, l.attempts[d]):
				t.Errorf("%s: got %q %d times (%d publishes)", r.name, d, seen[d], max(1, l.attempts[d]))
			}
			if seen[d] == 1 {
				if prev, ok := lastRank[u.pub]; ok && u.rank < prev {
					t.Errorf("%s: publisher %d's update %d came after its update %d, which was acknowledged later", r.name, u.pub, u.rank, prev)
				}
				lastRank[u.pub] = u.rank
			}
		}
		lost := 0
		for d, u := range l.byData {
			if forTopics(u.topics, r.topics) && seen[d] == 0 {
				if lost < 5 {
					t.Errorf("%s: never got %q (topics %v)", r.name, d, u.topics)
				}
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("%s: %d updates lost of %d received", r.name, lost, len(seq))
		}
	}
	for i := range recs {
		for j := i + 1; j < len(recs); j++ {
			both := func(d string) bool {
				ts := []string{strings.TrimPrefix(d, "sentinel ")}
				if u, ok := l.byData[d]; ok {
					ts = u.topics
				}
				return forTopics(ts, recs[i].topics) && forTopics(ts, recs[j].topics)
			}
			a := slices.DeleteFunc(slices.Clone(seqs[i]), func(d string) bool { return !both(d) })
			b := slices.DeleteFunc(slices.Clone(seqs[j]), func(d string) bool { return !both(d) })
			if k := firstDiff(a, b); k >= 0 {
				t.Errorf("%s and %s disagree on the order of their common updates at %d of %d/%d: %s vs %s",
					recs[i].name, recs[j].name, k, len(a), len(b), at(a, k), at(b, k))
			}
		}
	}
}

// firstDiff returns the first index where a and b differ, or -1.
func firstDiff(a, b []string) int {
	for k := range max(len(a), len(b)) {
		if k >= len(a) || k >= len(b) || a[k] != b[k] {
			return k
		}
	}
	return -1
}

func at(s []string, k int) string {
	if k < len(s) {
		return strconv.Quote(s[k])
	}
	return "(end)"
}

// publisher publishes n updates one after the other on c, each on topic
// A, topic B or both as rng says, and records each once acknowledged.
// An update whose publish may or may not have been stored (a 502 from a
// proxy whose node died under it, a broken connection) is published
// again when retryUnknown, as a publisher that must not lose it does;
// otherwise any error fails the test.
func publisher(ctx context.Context, t *testing.T, c *client.Client, l *ledger, pub, n int, rng *rand.Rand, retryUnknown bool, acked func()) error {
	for k := range n {
		u := update{data: fmt.Sprintf("p%d-%d", pub, k), pub: pub, rank: k}
		switch rng.IntN(5) {
		case 0:
			u.topics = []string{topicA, topicB}
		case 1, 2:
			u.topics = []string{topicA}
		default:
			u.topics = []string{topicB}
		}
		for {
			_, err := c.Publish(ctx, client.Update{Topics: u.topics, Data: u.data})
			if err == nil {
				break
			}
			if !retryUnknown || ctx.Err() != nil {
				return fmt.Errorf("publisher %d, update %d: %w", pub, k, err)
			}
			// The update may be stored: the subscribers may get it once
			// per attempt.
			l.ambiguous(u.data)
			if he, ok := errors.AsType[*client.HubError](err); ok {
				err = fmt.Errorf("HTTP %d", he.Status) // not the proxy's HTML page
			}
			t.Logf("publisher %d, update %d: %v; publishing it again", pub, k, err)
		}
		if l.unknown(u.data) {
			l.ambiguous(u.data) // the attempt that succeeded
		}
		l.add(u)
		if acked != nil {
			acked()
		}
	}
	return nil
}

// publishAll runs one publisher per client concurrently, n updates each.
func publishAll(ctx context.Context, t *testing.T, l *ledger, cs []*client.Client, n int, seed uint64, retryUnknown bool, acked func()) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(cs))
	for p, c := range cs {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(p)))
			errs[p] = publisher(ctx, t, c, l, p, n, rng, retryUnknown, acked)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// publishSentinels publishes the sentinel of topic A on ca, then that of
// topic B on cb.
func publishSentinels(ctx context.Context, t *testing.T, ca, cb *client.Client) {
	t.Helper()
	for _, p := range []struct {
		c     *client.Client
		topic string
	}{{ca, topicA}, {cb, topicB}} {
		if _, err := p.c.Publish(ctx, client.Update{Topics: []string{p.topic}, Data: sentinel(p.topic)}); err != nil {
			t.Fatalf("sentinel: %v", err)
		}
	}
}

func seedFor(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HERALD_NODES_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("HERALD_NODES_SEED: %v", err)
		}
	}
	t.Logf("seed %d (HERALD_NODES_SEED replays its topics)", seed)
	return seed
}

// TestNodesOneOrder runs three nodes on one Redis, subscribers on every
// node (on topic A, topic B, or both), and publishers on every node at
// once. Every subscriber must get exactly the updates of its topics, each
// once, in the same global order as every other subscriber.
func TestNodesOneOrder(t *testing.T) {
	seed := seedFor(t)
	rd := redistest.Start(t, redistest.Options{})
	ns := startNodes(t, rd.URL(), "http://hub.test/.well-known/mercure", freeAddr(t), freeAddr(t), freeAddr(t))

	var recs []*recorder
	var pubs []*client.Client
	for i, n := range ns.nodes {
		c := nodeClient(t, n, ns.token)
		for j, ts := range [][]string{{topicA}, {topicA}, {topicB}, {topicB}, {topicA, topicB}} {
			recs = append(recs, subscribe(t, c, fmt.Sprintf("node %d subscriber %d %v", i+1, j+1, ts), "", ts...))
		}
		pubs = append(pubs, c, nodeClient(t, n, ns.token)) // two publishers per node
	}

	ctx, cancel := context.WithTimeout(t.Context(), nodesDeadline)
	defer cancel()
	l := newLedger()
	publishAll(ctx, t, l, pubs, 50, seed, false, nil)
	publishSentinels(ctx, t, pubs[0], pubs[5]) // on nodes 1 and 3
	waitSentinels(t, recs)
	checkDeliveries(t, l, recs)
}

// TestNodesResumeAcrossNodes moves one subscriber from node to node with
// its Last-Event-ID while updates keep coming, published on every node in
// turn: what it received on the three nodes, put end to end, must be
// exactly what was published on its topics, in order.
//
// Updates on a topic it does not follow are published only while it is
// away, and never first, so that the update right after each resume point
// is one it must get: a resume one update off would lose it.
func TestNodesResumeAcrossNodes(t *testing.T) {
	rd := redistest.Start(t, redistest.Options{})
	ns := startNodes(t, rd.URL(), "http://hub.test/.well-known/mercure", freeAddr(t), freeAddr(t), freeAddr(t))
	cs := []*client.Client{
		nodeClient(t, ns.nodes[0], ns.token),
		nodeClient(t, ns.nodes[1], ns.token),
		nodeClient(t, ns.nodes[2], ns.token),
	}
	ctx, cancel := context.WithTimeout(t.Context(), nodesDeadline)
	defer cancel()

	// want is every update on topics A and B, in the order acknowledged:
	// one publisher, one publish at a time, so that is the global order.
	var want []string
	n := 0
	publish := func(count int, others bool) {
		for i := range count {
			topic, data := topicA, fmt.Sprintf("u%d", n)
			switch {
			case others && i%3 == 2:
				topic = "https://example.com/nodes/c" // not for our subscriber
			case n%2 == 1:
				topic = topicB
			}
			if _, err := cs[n%3].Publish(ctx, client.Update{Topics: []string{topic}, Data: data}); err != nil {
				t.Errorf("publish %s on node %d: %v", data, n%3+1, err)
				return
			}
			if topic != "https://example.com/nodes/c" {
				want = append(want, data)
			}
			n++
		}
	}

	var got []string
	var conns []client.ConnectInfo
	leg := func(r *recorder) string {
		r.stop()
		evs, cis := r.snapshot()
		for _, ev := range evs {
			got = append(got, ev.Data)
		}
		conns = append(conns, cis...)
		return r.sub.LastEventID()
	}

	// Node 1: live, reads part of what is published, and leaves.
	r := subscribe(t, cs[0], "node 1", "", topicA, topicB)
	publish(30, false)
	r.waitCount(t, 20)
	last := leg(r)

	// Updates it misses, then node 2 with its Last-Event-ID, while more
	// are published: the replay hands over to live delivery under load.
	publish(30, true)
	r = subscribe(t, cs[1], "node 2", last, topicA, topicB)
	var wg sync.WaitGroup
	wg.Go(func() { publish(45, false) })
	r.waitCount(t, 40)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	last = leg(r)

	// More it misses, then node 3 up to the sentinels.
	publish(30, true)
	r = subscribe(t, cs[2], "node 3", last, topicA, topicB)
	publishSentinels(ctx, t, cs[0], cs[1])
	want = append(want, sentinel(topicA), sentinel(topicB))
	waitSentinels(t, []*recorder{r})
	leg(r)

	if k := firstDiff(got, want); k >= 0 {
		t.Errorf("received %d updates over three nodes, published %d; first difference at %d: got %s, want %s\ngot  %v\nwant %v",
			len(got), len(want), k, at(got, k), at(want, k), got, want)
	}
	if len(conns) != 3 {
		t.Errorf("%d connections, want 3 (one per node): %+v", len(conns), conns)
	}
	for i, ci := range conns {
		if ci.PossibleLoss {
			t.Errorf("connection %d: resumed from %q, asked %q", i+1, ci.ResumedFrom, ci.Requested)
		}
		if i > 0 && ci.Requested == "" {
			t.Errorf("connection %d sent no Last-Event-ID", i+1)
		}
	}
}

// nginxConf is deploy/nginx/herald.conf as the tests run it: their nodes
// in place of the marked server lines (with the shipped parameters), the
// port nginxtest picks in place of 8080, and, when the tests run as root,
// workers that run as root too, so that they can use the test's temp dir.
// Everything else, the relative paths included (nginxtest runs nginx with
// the temp dir as its prefix), is the shipped file.
func nginxConf(t *testing.T, nodes ...string) string {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/nginx/herald.conf")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	inBlock, servers, listens := false, 0, 0
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "# BEGIN herald nodes":
			inBlock = true
		case trimmed == "# END herald nodes":
			inBlock = false
		case inBlock && strings.HasPrefix(trimmed, "server "):
			servers++
			if servers > 1 {
				continue
			}
			f := strings.Fields(trimmed)
			indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
			for _, n := range nodes {
				out = append(out, indent+"server "+n+" "+strings.Join(f[2:], " "))
			}
			continue
		case trimmed == "listen 8080;":
			listens++
			line = strings.Replace(line, "8080", "127.0.0.1:{{.Port}}", 1)
		}
		out = append(out, line)
	}
	if servers == 0 || listens != 1 || inBlock {
		t.Fatalf("deploy/nginx/herald.conf: want a closed block of server lines between the herald nodes markers (found %d) and one \"listen 8080;\" (found %d)", servers, listens)
	}
	conf := strings.Join(out, "\n")
	if os.Geteuid() == 0 {
		conf = "user root;\n" + conf
	}
	return conf
}

// subscribersOn reads the herald_subscribers gauge of a node.
func subscribersOn(t *testing.T, h *hubProcess) int {
	t.Helper()
	n := scrapeMetric(t, h.addr, "herald_subscribers")
	if n < 0 {
		t.Fatalf("%s metrics: no herald_subscribers", h.name)
	}
	return int(n)
}

// TestNodesBehindNginx runs three nodes behind nginx with the shipped
// config, subscribers and publishers all going through nginx, and kills
// the node with the most subscribers (SIGKILL) while updates are being
// published. Every subscriber must end up with every update of its
// topics, in the one global order, with nothing but the client's own
// reconnection: those on the dead node come back through nginx to a
// survivor, resume with Last-Event-ID, and are told nothing was lost.
func TestNodesBehindNginx(t *testing.T) {
	seed := seedFor(t)
	rd := redistest.Start(t, redistest.Options{})
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	// nginx first, so that the nodes know the public URL; it starts with
	// its upstreams down, as it may in production.
	ngx := nginxtest.Start(t, nginxConf(t, addrs...))
	public := ngx.URL() + "/.well-known/mercure"
	ns := startNodes(t, rd.URL(), public, addrs...)

	var recs []*recorder
	for i, ts := range [][]string{{topicA}, {topicB}, {topicA, topicB}, {topicA}, {topicB}, {topicA, topicB}, {topicA}, {topicB}, {topicA, topicB}} {
		c := hubClient(t, ngx.URL(), "") // a client (and connection) of its own, as a browser has
		recs = append(recs, subscribe(t, c, fmt.Sprintf("subscriber %d %v", i+1, ts), "", ts...))
	}
	victim, most := 0, -1
	total := 0
	for i, n := range ns.nodes {
		k := subscribersOn(t, n)
		t.Logf("%s holds %d subscriptions", n.name, k)
		total += k
		if k > most {
			victim, most = i, k
		}
	}
	if total != len(recs) || most == len(recs) {
		t.Fatalf("nginx spread %d subscriptions as %d on the nodes, the most (%d) on one: want them all, on more than one node", len(recs), total, most)
	}

	var pubs []*client.Client
	for range 3 {
		pubs = append(pubs, hubClient(t, ngx.URL(), ns.token))
	}
	ctx, cancel := context.WithTimeout(t.Context(), nodesDeadline)
	defer cancel()
	l := newLedger()
	var acked sync.Mutex
	count, killed := 0, make(chan struct{})
	publishAll(ctx, t, l, pubs, 80, seed, true, func() {
		acked.Lock()
		defer acked.Unlock()
		if count++; count == 80 {
			// A third of the way, with publishes in flight on every node.
			ns.nodes[victim].kill()
			close(killed)
		}
	})
	<-killed
	publishSentinels(ctx, t, pubs[0], pubs[1])
	waitSentinels(t, recs)
	checkDeliveries(t, l, recs)

	moved := 0
	for _, r := range recs {
		_, cis := r.snapshot()
		if len(cis) > 1 {
			moved++
		}
		for i, ci := range cis {
			if ci.PossibleLoss {
				t.Errorf("%s, connection %d: resumed from %q, asked %q", r.name, i+1, ci.ResumedFrom, ci.Requested)
			}
			if i > 0 && ci.Requested == "" {
				t.Errorf("%s, connection %d: no Last-Event-ID", r.name, i+1)
			}
		}
	}
	if moved != most {
		t.Errorf("%d subscribers reconnected, want the %d of %s", moved, most, ns.nodes[victim].name)
	}
	// Every subscription is on a survivor now.
	survivors := 0
	for i, n := range ns.nodes {
		if i != victim {
			survivors += subscribersOn(t, n)
		}
	}
	if survivors != len(recs) {
		t.Errorf("the surviving nodes hold %d subscriptions, want all %d", survivors, len(recs))
	}
}
