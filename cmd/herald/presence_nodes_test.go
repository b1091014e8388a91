package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/internal/redistest"
)

// nodesTokenArgs runs `herald token` with the nodes' key.
func nodesTokenArgs(t *testing.T, publicURL string, args ...string) string {
	t.Helper()
	return heraldToken(t, "", append([]string{"--key", nodeSecret, "--aud", publicURL}, args...)...)
}

// apiGet reads path on node addr with token; it returns the status and body.
func apiGet(t *testing.T, addr, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// statusOf sends GET path to addr with token and returns the status,
// without reading the body (a stream's never ends).
func statusOf(t *testing.T, addr, path, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// activeMatches lists the matches of the subscriptions the API of addr
// shows, in order.
func activeMatches(t *testing.T, addr, token string) []string {
	t.Helper()
	status, body := apiGet(t, addr, "/.well-known/mercure/subscriptions", token)
	if status != http.StatusOK {
		t.Fatalf("subscriptions API of %s: %d %s", addr, status, body)
	}
	var c struct {
		Subscriptions []struct {
			Match string `json:"match"`
		} `json:"subscriptions"`
	}
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range c.Subscriptions {
		out = append(out, s.Match)
	}
	return out
}

// until polls cond every 50 ms for up to nodesDeadline.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(nodesDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, nodesDeadline)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Three nodes on one Redis: the subscriptions made on every node appear in
// the API of any node; a node killed with SIGKILL has its subscriptions
// ended in the API and announced active: false exactly once each, within
// about its lease; a token subject disconnected on one node loses its
// streams on every node and stays out; /admin/nodes lists the living.
func TestNodesPresence(t *testing.T) {
	rd := redistest.Start(t, redistest.Options{})
	work, logs := t.TempDir(), t.TempDir()
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	public := "http://" + addrs[0] + "/.well-known/mercure"
	const lease = "2s"
	var nodes []*hubProcess
	for i, addr := range addrs {
		nodes = append(nodes, startHub(t, work, logs, addr,
			"--engine", rd.URL(), "--jwt-key", nodeSecret, "--public-url", public,
			"--subscriptions", "--subscriptions-grace", "0", "--node-lease", lease, "--node-name", "node-"+string(rune('1'+i))))
	}
	const watched = "/.well-known/mercure/subscriptions/*"
	reader := nodesTokenArgs(t, public, "--sub", "reader", "--subscribe", "*")
	w := openStream(t, "http://"+addrs[2]+"/.well-known/mercure?match_urlpattern="+url.QueryEscape(watched), reader)
	if m, active := w.subDoc(t); m != watched || !active {
		t.Fatalf("watcher's own event: %s %v", m, active)
	}
	sub := func(node int, who, topic string) *sseStream {
		return openStream(t, "http://"+addrs[node]+"/.well-known/mercure?match="+url.QueryEscape(topic),
			nodesTokenArgs(t, public, "--sub", who, "--subscribe", topic))
	}
	sub(0, "ann", topicA+"/1")
	sub(0, "ann", topicA+"/2")
	sub(1, "bob", topicB)
	sub(2, "cid", topicB+"/c")
	for range 4 {
		if _, active := w.subDoc(t); !active {
			t.Fatal("an end before any node died")
		}
	}
	want := []string{watched, topicA + "/1", topicA + "/2", topicB, topicB + "/c"}
	for _, addr := range addrs {
		got := activeMatches(t, addr, reader)
		for _, m := range want {
			if !contains(got, m) {
				t.Fatalf("the API of %s lists %v, want all of %v", addr, got, want)
			}
		}
	}

	// SIGKILL: node 1 says no goodbye; a survivor must end its two.
	nodes[0].kill()
	ended := map[string]int{}
	for range 2 {
		m, active := w.subDoc(t)
		if active {
			t.Fatalf("a beginning (%s) where the dead node's ends were due", m)
		}
		ended[m]++
	}
	if ended[topicA+"/1"] != 1 || ended[topicA+"/2"] != 1 {
		t.Fatalf("ends announced: %v, want each of the dead node's once", ended)
	}
	for _, addr := range addrs[1:] {
		if got := activeMatches(t, addr, reader); contains(got, topicA+"/1") || contains(got, topicA+"/2") {
			t.Fatalf("the API of %s still lists the dead node's subscriptions: %v", addr, got)
		}
	}
	// Two more leases: a second announcement would come by then. The
	// sentinel's beginning must be the next event.
	time.Sleep(2 * 2 * time.Second)
	sub(1, "eve", "https://example.com/sentinel")
	if m, active := w.subDoc(t); m != "https://example.com/sentinel" || !active {
		t.Fatalf("after the ends, %s (active %v) came before the sentinel", m, active)
	}

	// Disconnect one subscriber on node 2 that node 3 serves: node 2
	// accepts and asks every node, and node 3 ends the stream.
	admin := nodesTokenArgs(t, public, "--admin")
	fay := sub(2, "fay", "https://example.com/fay")
	w.subDoc(t)
	faysID := subscriberOf(t, addrs[1], reader, "https://example.com/fay")
	if status := adminPost(t, addrs[1], admin, "subscriber="+url.QueryEscape(faysID)); status != http.StatusAccepted {
		t.Fatalf("disconnect of a subscriber on another node: %d, want 202", status)
	}
	select {
	case <-fay.ended():
	case <-time.After(nodesDeadline):
		t.Fatal("fay's stream on node 3 still open after a disconnect asked on node 2")
	}
	if m, active := w.subDoc(t); m != "https://example.com/fay" || active {
		t.Fatalf("after fay's disconnect: %s (active %v), want fay's end", m, active)
	}

	// Disconnect a subject on node 2: its streams on nodes 2 and 3 end.
	dan := nodesTokenArgs(t, public, "--sub", "dan", "--subscribe", "*")
	d2 := openStream(t, "http://"+addrs[1]+"/.well-known/mercure?match=https://example.com/dan", dan)
	d3 := openStream(t, "http://"+addrs[2]+"/.well-known/mercure?match=https://example.com/dan", dan)
	for range 2 {
		w.subDoc(t)
	}
	if status := adminPost(t, addrs[1], admin, "sub=dan"); status != http.StatusOK {
		t.Fatalf("disconnect: %d", status)
	}
	for i, s := range []*sseStream{d2, d3} {
		select {
		case <-s.ended():
		case <-time.After(nodesDeadline):
			t.Fatalf("dan's stream on node %d still open", i+2)
		}
	}
	until(t, "node 3 refusing dan's token", func() bool {
		return statusOf(t, addrs[2], "/.well-known/mercure?match=https://example.com/dan", dan) == http.StatusUnauthorized
	})

	status, body := apiGet(t, addrs[1], "/admin/nodes", admin)
	if status != http.StatusOK || strings.Contains(body, `"name":"node-1"`) || !strings.Contains(body, `"name":"node-2"`) || !strings.Contains(body, `"name":"node-3"`) {
		t.Fatalf("/admin/nodes: %d %s", status, body)
	}
}

// adminPost posts form to addr's /admin/disconnect and returns the status.
func adminPost(t *testing.T, addr, token, form string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/admin/disconnect", strings.NewReader(form))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A subscriber that leaves one node and comes back to another within its
// grace period (no sticky sessions behind the load balancer) keeps its
// identifier, and nothing is announced.
func TestNodesTakeOver(t *testing.T) {
	rd := redistest.Start(t, redistest.Options{})
	work, logs := t.TempDir(), t.TempDir()
	addrs := []string{freeAddr(t), freeAddr(t)}
	admins := []string{freeAddr(t), freeAddr(t)}
	public := "http://" + addrs[0] + "/.well-known/mercure"
	for i, addr := range addrs {
		startHub(t, work, logs, addr, "--engine", rd.URL(), "--jwt-key", nodeSecret, "--public-url", public,
			"--subscriptions", "--subscriptions-grace", "1m", "--admin-addr", admins[i])
	}
	const watched = "/.well-known/mercure/subscriptions/*"
	reader := nodesTokenArgs(t, public, "--sub", "reader", "--subscribe", "*")
	w := openStream(t, "http://"+addrs[1]+"/.well-known/mercure?match_urlpattern="+url.QueryEscape(watched), reader)
	w.subDoc(t)
	ann := nodesTokenArgs(t, public, "--sub", "ann", "--subscribe", topicA)
	first := openStream(t, "http://"+addrs[0]+"/.well-known/mercure?match="+url.QueryEscape(topicA), ann)
	w.subDoc(t)
	before := subscriberOf(t, addrs[1], reader, topicA)

	first.cancel()
	until(t, "node 1 to see ann leave", func() bool {
		return scrapeMetric(t, admins[0], "herald_subscribers_in_grace") == 1
	})
	openStream(t, "http://"+addrs[1]+"/.well-known/mercure?match="+url.QueryEscape(topicA), ann)
	if after := subscriberOf(t, addrs[0], reader, topicA); after != before {
		t.Fatalf("ann was %s on node 1 and is %s on node 2", before, after)
	}
	openStream(t, "http://"+addrs[0]+"/.well-known/mercure?match=https://example.com/sentinel",
		nodesTokenArgs(t, public, "--sub", "zed", "--subscribe", "https://example.com/sentinel"))
	if m, active := w.subDoc(t); m != "https://example.com/sentinel" || !active {
		t.Fatalf("after ann moved: %s (active %v), want the sentinel's beginning first", m, active)
	}
}

// subscriberOf reads the subscriptions API of addr and returns the one
// subscriber of match.
func subscriberOf(t *testing.T, addr, token, match string) string {
	t.Helper()
	status, body := apiGet(t, addr, "/.well-known/mercure/subscriptions", token)
	var c struct {
		Subscriptions []struct{ Match, Subscriber string }
	}
	if err := json.Unmarshal([]byte(body), &c); err != nil || status != http.StatusOK {
		t.Fatalf("subscriptions API: %d %s", status, body)
	}
	var out []string
	for _, s := range c.Subscriptions {
		if s.Match == match {
			out = append(out, s.Subscriber)
		}
	}
	if len(out) != 1 {
		t.Fatalf("subscribers of %s: %v", match, out)
	}
	return out[0]
}
