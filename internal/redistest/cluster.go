package redistest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	clusterSlots = 16384
	// clusterTimeout bounds the wait for the nodes to meet and agree
	// that every slot is served.
	clusterTimeout = 20 * time.Second
	// maxRedirects bounds the MOVED replies Cluster.Do follows.
	maxRedirects = 5
)

// Cluster is a Redis Cluster of masters without replicas, each a Server
// of the test.
type Cluster struct {
	nodes []*Server
	// first[i] is the first slot of nodes[i]; its last is first[i+1]-1.
	first []int
}

// StartCluster starts masters cluster-enabled servers, gives each an
// equal range of the slots, makes them meet, and returns once every node
// reports cluster_state:ok and knows all the others. The slots are
// assigned with CLUSTER ADDSLOTSRANGE rather than redis-cli --cluster
// create, which refuses fewer than three masters.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 1 || masters > 100 {
		t.Fatalf("StartCluster: %d masters, want 1 to 100", masters)
	}
	c := &Cluster{}
	for i := range masters {
		s := newServer(t, Options{})
		s.cluster = true
		s.launch(false)
		lo, hi := i*clusterSlots/masters, (i+1)*clusterSlots/masters-1
		if r := s.Do(t, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); r != "OK" {
			t.Fatalf("cluster node %s: CLUSTER ADDSLOTSRANGE %d %d: %s", s.Addr(), lo, hi, r)
		}
		c.nodes = append(c.nodes, s)
		c.first = append(c.first, lo)
	}
	for _, s := range c.nodes[1:] {
		s.mu.Lock()
		port, bus := strconv.Itoa(s.port), strconv.Itoa(s.busPort)
		s.mu.Unlock()
		// The bus port is passed because it is not port+10000 here.
		if r := c.nodes[0].Do(t, "CLUSTER", "MEET", "127.0.0.1", port, bus); r != "OK" {
			t.Fatalf("cluster: CLUSTER MEET %s: %s", s.Addr(), r)
		}
	}
	err := poll(clusterTimeout, func() error {
		for _, s := range c.nodes {
			r, err := command(s.Addr(), probeTimeout, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			state, known := infoField(r.text, "cluster_state"), infoField(r.text, "cluster_known_nodes")
			if state != "ok" || known != strconv.Itoa(masters) {
				return fmt.Errorf("node %s: cluster_state %s, %s of %d nodes known", s.Addr(), state, known, masters)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return c
}

// Nodes returns the cluster's servers, in the order of their slots.
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// URL returns the cluster's URL in the form go-redis's ParseClusterURL
// reads: the first node as the host, the others as addr parameters.
func (c *Cluster) URL() string {
	var b strings.Builder
	b.WriteString("redis://")
	b.WriteString(c.nodes[0].Addr())
	for i, s := range c.nodes[1:] {
		if i == 0 {
			b.WriteString("?addr=")
		} else {
			b.WriteString("&addr=")
		}
		b.WriteString(s.Addr())
	}
	return b.String()
}

// NodeFor returns the node that serves key's slot, by the slot ranges
// StartCluster assigned (the helpers never move slots).
func (c *Cluster) NodeFor(t testing.TB, key string) *Server {
	t.Helper()
	r := c.nodes[0].Do(t, "CLUSTER", "KEYSLOT", key)
	slot, err := strconv.Atoi(r)
	if err != nil || slot < 0 || slot >= clusterSlots {
		t.Fatalf("CLUSTER KEYSLOT %s: %s", key, r)
	}
	i := len(c.first) - 1
	for c.first[i] > slot {
		i--
	}
	return c.nodes[i]
}

// Do sends one command to the cluster, through the first node, following
// MOVED redirections to the node that serves the key, and renders the
// reply as Server.Do does. ASK is not followed: the helpers never migrate
// slots.
func (c *Cluster) Do(t testing.TB, args ...string) string {
	t.Helper()
	a := c.nodes[0].Addr()
	for range maxRedirects {
		r, err := command(a, doTimeout, args...)
		if err != nil {
			t.Fatalf("cluster node %s: %v", a, err)
		}
		// MOVED <slot> <host:port>
		f := strings.Fields(r.text)
		if !r.isError() || len(f) != 3 || f[0] != "MOVED" {
			return r.String()
		}
		a = f[2]
	}
	t.Fatalf("cluster: %s: more than %d redirections", args[0], maxRedirects)
	return ""
}
