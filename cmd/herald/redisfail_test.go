package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-hub/herald/internal/redistest"
)

// The tests in this file hold herald nodes on the Redis engine to what
// they promise when Redis fails: a Redis that stops or hangs refuses
// publishes fast with 503 and Retry-After while live streams stay open; a
// Redis that comes back loses nothing acknowledged and delivers nothing
// twice; a Redis that comes back empty is a new epoch that clients are
// told about; a Sentinel failover loses no update that every replica
// that could be promoted confirmed (--redis-wait).

// redisNode is one herald process on the Redis engine, with its admin
// listener (metrics, readiness) and a publisher token for its URL.
type redisNode struct {
	*hubProcess
	admin string
	token string
}

// startRedisNodes runs n herald nodes on the Redis at engineURL, all in
// dir work so that they share the development key, with a short
// heartbeat so that an idle stream shows it is alive, and waits until
// each is ready.
func startRedisNodes(t *testing.T, c *http.Client, work, logs, engineURL string, n int, extra ...string) []*redisNode {
	t.Helper()
	nodes := make([]*redisNode, n)
	for i := range nodes {
		admin := freeAddr(t)
		args := append([]string{"--engine", engineURL, "--admin-addr", admin, "--heartbeat", "200ms"}, extra...)
		h := startHub(t, work, logs, freeAddr(t), args...)
		nodes[i] = &redisNode{hubProcess: h, admin: admin, token: mintToken(t, work, h.hubURL())}
		nodes[i].waitReady(t, c, http.StatusOK, 10*time.Second)
	}
	return nodes
}

// newTestClient returns an HTTP client for one test; its idle connections
// are closed at the end of the test.
func newTestClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// readyz returns the status of the node's /readyz, 0 when it did not
// answer within a second.
func (n *redisNode) readyz(c *http.Client) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.admin+"/readyz", nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady polls /readyz until it answers want.
func (n *redisNode) waitReady(t *testing.T, c *http.Client, want int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := n.readyz(c)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: /readyz answered %d for %v, want %d", n.name, got, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric reads one unlabelled sample from the node's /metrics (on its
// admin listener); -1 when it is absent.
func (n *redisNode) metric(t *testing.T, name string) float64 {
	t.Helper()
	return scrapeMetric(t, n.admin, name)
}

// logHas reports whether the node's log contains s.
func (n *redisNode) logHas(s string) bool {
	b, _ := os.ReadFile(n.stderr)
	return strings.Contains(string(b), s)
}

// pubResult is one publish as the publisher saw it.
type pubResult struct {
	id         string
	status     int // 0: no answer in time
	retryAfter string
	err        error
	sent, done time.Time
}

// publishTo publishes an update with the given id, waiting at most
// timeout for the answer: a publish that takes longer counts as
// unanswered.
func publishTo(c *http.Client, n *redisNode, timeout time.Duration, id, topic, data string) pubResult {
	r := pubResult{id: id, sent: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	form := url.Values{"topic": {topic}, "data": {data}, "id": {id}}.Encode()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.hubURL(), strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+n.token)
	resp, err := c.Do(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			r.status, r.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
			if r.status == http.StatusOK && string(body) != id {
				err = fmt.Errorf("200 with body %q, want the id %q", body, id)
			}
		}
	}
	r.err, r.done = err, time.Now()
	return r
}

// publishUntilOK publishes until the hub acknowledges, retrying 503s
// (each of which may or may not have stored the update: the caller
// records them) until deadline.
func publishUntilOK(t *testing.T, c *http.Client, n *redisNode, deadline time.Time, id, topic, data string) []pubResult {
	t.Helper()
	var rs []pubResult
	for {
		r := publishTo(c, n, 5*time.Second, id, topic, data)
		rs = append(rs, r)
		switch {
		case r.err == nil && r.status == http.StatusOK:
			return rs
		case r.err == nil && r.status != http.StatusServiceUnavailable:
			t.Fatalf("publish %s on %s: HTTP %d", id, n.name, r.status)
		case time.Now().After(deadline):
			t.Fatalf("publish %s on %s: not acknowledged by the deadline (last: HTTP %d, %v; %d tries)", id, n.name, r.status, r.err, len(rs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// streamEvent is one event a stream received.
type streamEvent struct {
	id, data string
	at       time.Time
}

// sseWatch is an open subscription read line by line, so that heartbeat
// comments (which an EventSource hides) are seen too.
type sseWatch struct {
	name   string
	header http.Header
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	events   []streamEvent
	comments []time.Time
	notes    []string  // comments with text, such as why the stream ends
	retry    string    // the last retry field
	ended    time.Time // zero while the stream is open
	endErr   error
}

// watchStream subscribes to topic on node n, sending lastEventID when it
// is not empty, and returns once the response headers are in: from then
// on the subscription is registered. The stream is closed at cleanup.
func watchStream(t *testing.T, c *http.Client, n *redisNode, name, topic, lastEventID string) *sseWatch {
	t.Helper()
	w, err := tryWatch(t, c, n, name, topic, lastEventID)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// tryWatch is watchStream that returns a refused subscription as an
// error instead of failing the test.
func tryWatch(t *testing.T, c *http.Client, n *redisNode, name, topic, lastEventID string) (*sseWatch, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.hubURL()+"?match="+url.QueryEscape(topic), nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	headers := time.AfterFunc(5*time.Second, cancel)
	resp, err := c.Do(req)
	headers.Stop()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s: subscribe on %s: %w", name, n.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s: subscribe on %s: HTTP %d: %s", name, n.name, resp.StatusCode, b)
	}
	w := &sseWatch{name: name, header: resp.Header, cancel: cancel, done: make(chan struct{})}
	go w.read(resp.Body)
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w, nil
}

// readHistory reads the whole history of topic on node n, from earliest
// up to the sentinel, as a client does: a refused subscription or a
// stream that ends first (a node that has not met the log's new epoch
// yet ends it) is tried again. It returns the ids and how many attempts
// it took.
func readHistory(t *testing.T, c *http.Client, n *redisNode, name, topic, sentinel string, timeout time.Duration) ([]string, int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why []string
	for attempt := 1; time.Now().Before(deadline); attempt++ {
		w, err := tryWatch(t, c, n, fmt.Sprintf("%s (attempt %d)", name, attempt), topic, "earliest")
		if err != nil {
			why = append(why, err.Error())
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for time.Now().Before(deadline) {
			ids := w.ids()
			if slices.Contains(ids, sentinel) {
				w.cancel()
				return ids, attempt
			}
			if _, _, ended, _ := w.snapshot(); !ended.IsZero() {
				w.mu.Lock()
				why = append(why, fmt.Sprintf("attempt %d ended after %d events, comments %q", attempt, len(ids), w.notes))
				w.mu.Unlock()
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: no full history up to %s within %v: %s", name, sentinel, timeout, strings.Join(why, "; "))
	return nil, 0
}

func (w *sseWatch) read(body io.ReadCloser) {
	defer close(w.done)
	defer body.Close()
	br := bufio.NewReader(body)
	var id, data string
	hasData := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			w.mu.Lock()
			w.ended, w.endErr = time.Now(), err
			w.mu.Unlock()
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if hasData {
				w.mu.Lock()
				w.events = append(w.events, streamEvent{id: id, data: data, at: time.Now()})
				w.mu.Unlock()
			}
			data, hasData = "", false
		case strings.HasPrefix(line, ":"):
			w.mu.Lock()
			w.comments = append(w.comments, time.Now())
			if text := strings.TrimSpace(line[1:]); text != "" {
				w.notes = append(w.notes, text)
			}
			w.mu.Unlock()
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				id = value
			case "retry":
				w.mu.Lock()
				w.retry = value
				w.mu.Unlock()
			case "data":
				if hasData {
					data += "\n"
				}
				data, hasData = data+value, true
			}
		}
	}
}

// snapshot returns what the stream has received so far, and when it
// ended (zero while open).
func (w *sseWatch) snapshot() (events []streamEvent, comments []time.Time, ended time.Time, endErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events), slices.Clone(w.comments), w.ended, w.endErr
}

// ids returns the ids of the events received so far.
func (w *sseWatch) ids() []string {
	evs, _, _, _ := w.snapshot()
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.id
	}
	return ids
}

// waitID waits until the stream has received an event with id.
func (w *sseWatch) waitID(t *testing.T, id string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs, _, ended, err := w.snapshot()
		if slices.ContainsFunc(evs, func(e streamEvent) bool { return e.id == id }) {
			return
		}
		if !ended.IsZero() {
			t.Fatalf("%s: stream ended (%v) before %s arrived; it got %d events", w.name, err, id, len(evs))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not arrive within %v; it got %d events", w.name, id, timeout, len(evs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEnded waits until the stream has ended.
func (w *sseWatch) waitEnded(t *testing.T, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, _, ended, _ := w.snapshot()
		if !ended.IsZero() {
			return ended
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: stream still open %v later", w.name, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkDelivery checks one live subscriber's events after a sentinel:
// no id twice, every acknowledged id present and in acknowledgement
// order, nothing that was never published, and the sentinel last. Ids in
// maybe were not acknowledged (503, or no answer) and may have been stored
// all the same (the engine documents that outcome as open); the ones that
// arrived are returned.
func checkDelivery(t *testing.T, name string, got []string, acked []string, maybe map[string]bool, sentinel string) (extra []string) {
	t.Helper()
	seen := make(map[string]int, len(got))
	for i, id := range got {
		if j, dup := seen[id]; dup {
			t.Errorf("%s: %s delivered twice (events %d and %d)", name, id, j, i)
		}
		seen[id] = i
	}
	if len(got) == 0 || got[len(got)-1] != sentinel {
		t.Errorf("%s: last event is not the sentinel %s: %v", name, sentinel, lastN(got, 5))
	}
	ackedSet := make(map[string]bool, len(acked))
	prev, prevID := -1, ""
	var missing []string
	for _, id := range acked {
		ackedSet[id] = true
		i, ok := seen[id]
		if !ok {
			missing = append(missing, id)
			continue
		}
		if i < prev {
			t.Errorf("%s: %s (acknowledged after %s) delivered before it", name, id, prevID)
		}
		prev, prevID = i, id
	}
	if len(missing) > 0 {
		t.Errorf("%s: %d acknowledged updates never delivered: %v", name, len(missing), missing)
	}
	for _, id := range got {
		switch {
		case ackedSet[id] || id == sentinel:
		case maybe[id]:
			extra = append(extra, id)
		default:
			t.Errorf("%s: delivered %s, which was never published", name, id)
		}
	}
	return extra
}

func lastN(s []string, n int) []string { return s[max(0, len(s)-n):] }

// TestRedisOutage stops Redis under two herald nodes with live
// subscribers, as a crash (the port refuses connections) and as a hang
// (SIGSTOP: connections open, nothing answered). During the outage every
// publish is answered 503 with Retry-After within 2 s, none is
// acknowledged, /readyz answers 503, and the open streams stay open with
// heartbeats. When Redis is back, every acknowledged update reaches every
// subscriber once, in order, without a reconnection.
func TestRedisOutage(t *testing.T) {
	t.Parallel() // beside the other Redis tests only: each has its own processes
	for _, mode := range []string{"stop", "pause"} {
		t.Run(mode, func(t *testing.T) { testRedisOutage(t, mode == "pause") })
	}
}

func testRedisOutage(t *testing.T, pause bool) {
	const (
		topic = "https://example.com/outage"
		// answerWithin is what herald promises a publisher during an
		// outage: an answer within 2 s.
		answerWithin = 2 * time.Second
		outage       = 3 * time.Second
	)
	// Stopped Redis comes back with its data (append-only file); a
	// paused one keeps it in memory.
	srv := redistest.Start(t, redistest.Options{Persist: !pause})
	c := newTestClient(t)
	work, logs := t.TempDir(), t.TempDir()
	nodes := startRedisNodes(t, c, work, logs, srv.URL(), 2)

	var subs []*sseWatch
	for i, n := range nodes {
		for j := range 2 {
			subs = append(subs, watchStream(t, c, n, fmt.Sprintf("node %d subscriber %d", i, j), topic, ""))
		}
	}
	var acked []string
	maybe := map[string]bool{} // not acknowledged: may be stored all the same
	for i := range 10 {
		id := fmt.Sprintf("before-%d", i)
		if r := publishTo(c, nodes[i%2], 5*time.Second, id, topic, id); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("publish %s before the outage: HTTP %d, %v", id, r.status, r.err)
		}
		acked = append(acked, id)
	}
	for _, s := range subs {
		s.waitID(t, acked[len(acked)-1], 5*time.Second)
	}

	// The outage.
	t0 := time.Now()
	if pause {
		srv.Pause()
	} else {
		srv.Stop()
	}
	stopped := time.Since(t0)
	var (
		wg      sync.WaitGroup
		results = make([][]pubResult, 2*len(nodes))
		ready   = make([][]readySample, len(nodes))
	)
	for p := range results {
		wg.Go(func() {
			n := nodes[p%len(nodes)]
			for k := 0; time.Since(t0) < outage; k++ {
				id := fmt.Sprintf("outage-%d-%d", p, k)
				results[p] = append(results[p], publishTo(c, n, answerWithin, id, topic, id))
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	for i, n := range nodes {
		wg.Go(func() {
			for time.Since(t0) < outage {
				ready[i] = append(ready[i], readySample{time.Since(t0), n.readyz(c)})
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	tBack := time.Now()

	// Every publish answered 503 with Retry-After in time, none acknowledged.
	var total, refused int
	var slowest, firstAnswer time.Duration
	for _, rs := range results {
		for _, r := range rs {
			total++
			maybe[r.id] = true
			took := r.done.Sub(r.sent)
			slowest = max(slowest, took)
			switch {
			case r.err != nil:
				t.Errorf("publish %s sent %v after the outage began: no answer within %v: %v",
					r.id, r.sent.Sub(t0).Round(time.Millisecond), answerWithin, r.err)
			case r.status == http.StatusOK:
				t.Errorf("publish %s sent %v after the outage began was acknowledged", r.id, r.sent.Sub(t0).Round(time.Millisecond))
			case r.status != http.StatusServiceUnavailable:
				t.Errorf("publish %s during the outage: HTTP %d, want 503", r.id, r.status)
			default:
				refused++
				if n, err := strconv.Atoi(r.retryAfter); err != nil || n <= 0 {
					t.Errorf("publish %s: 503 with Retry-After %q, want a positive number of seconds", r.id, r.retryAfter)
				}
				if firstAnswer == 0 || r.done.Sub(t0) < firstAnswer {
					firstAnswer = r.done.Sub(t0)
				}
			}
		}
	}
	if total == 0 {
		t.Fatal("no publish was attempted during the outage")
	}
	t.Logf("outage (%s, took %v): %d publishes, %d answered 503, first 503 %v after the stop, slowest answer %v",
		map[bool]string{false: "stop", true: "pause"}[pause], stopped.Round(time.Millisecond),
		total, refused, firstAnswer.Round(time.Millisecond), slowest.Round(time.Millisecond))

	// /readyz turned 503 within the time a publish may take to be
	// refused, and stayed so.
	for i, samples := range ready {
		first := slices.IndexFunc(samples, func(s readySample) bool { return s.status == http.StatusServiceUnavailable })
		if first >= 0 {
			t.Logf("node %d: /readyz 503 %v after the stop", i, samples[first].at.Round(time.Millisecond))
		}
		if slices.ContainsFunc(samples, func(s readySample) bool {
			return s.at >= answerWithin && s.status != http.StatusServiceUnavailable
		}) {
			t.Errorf("node %d: /readyz was not 503 from %v after the stop on: %s", i, answerWithin, readyRuns(samples))
		}
	}
	// The streams stayed open and kept beating.
	for _, s := range subs {
		_, comments, ended, err := s.snapshot()
		if !ended.IsZero() {
			t.Errorf("%s: stream ended %v after the outage began: %v", s.name, ended.Sub(t0).Round(time.Millisecond), err)
		}
		beats := 0
		for _, at := range comments {
			if at.After(t0) && at.Before(tBack) {
				beats++
			}
		}
		// 200ms heartbeats over a 3 s outage: 15 due; a handful proves
		// the stream is served, whatever the machine's load.
		if beats < 3 {
			t.Errorf("%s: %d heartbeats during the %v outage, want at least 3", s.name, beats, outage)
		}
	}

	// Redis comes back.
	if pause {
		srv.Resume()
	} else {
		srv.Restart()
	}
	for _, n := range nodes {
		took := n.waitReady(t, c, http.StatusOK, 10*time.Second)
		t.Logf("%s ready %v after Redis came back", n.name, took.Round(time.Millisecond))
	}
	deadline := time.Now().Add(15 * time.Second)
	for i := range 10 {
		id := fmt.Sprintf("after-%d", i)
		rs := publishUntilOK(t, c, nodes[i%2], deadline, id, topic, id)
		if len(rs) > 1 {
			t.Logf("publish %s after the outage: acknowledged on try %d", id, len(rs))
		}
		acked = append(acked, id)
	}
	const sentinel = "sentinel"
	publishUntilOK(t, c, nodes[0], deadline, sentinel, topic, sentinel)
	for _, s := range subs {
		s.waitID(t, sentinel, 10*time.Second)
	}
	var order []string
	for _, s := range subs {
		got := s.ids()
		if extra := checkDelivery(t, s.name, got, acked, maybe, sentinel); len(extra) > 0 {
			t.Logf("%s: %d updates not acknowledged during the outage (503 or no answer) were delivered after it (outcome open, as documented): %v", s.name, len(extra), extra)
		}
		if order == nil {
			order = got
		} else if !slices.Equal(order, got) {
			t.Errorf("%s received another order than %s:\n%v\n%v", s.name, subs[0].name, got, order)
		}
		if _, _, ended, err := s.snapshot(); !ended.IsZero() {
			t.Errorf("%s: stream ended: %v", s.name, err)
		}
	}
}

type readySample struct {
	at     time.Duration // since the outage began
	status int
}

// readyRuns renders /readyz samples as runs of one status, for messages:
// "200 from 0s, 503 from 2.01s, 200 from 3.02s".
func readyRuns(samples []readySample) string {
	var b strings.Builder
	for i, s := range samples {
		if i == 0 || s.status != samples[i-1].status {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d from %v", s.status, s.at.Round(time.Millisecond))
		}
	}
	return b.String()
}

// TestRedisRestartedEmpty empties Redis under two herald nodes with live
// subscribers, by a restart without persistence and by FLUSHALL. Each
// node detects the new epoch (log line and
// herald_redis_epoch_changes_total), ends its live streams with a retry
// hint, and a client resuming with its old Last-Event-ID is told
// "earliest" and then gets the new history: what was published after the
// loss, before it came back and after. Publishing works again, and the
// new history holds exactly what was published after the loss.
func TestRedisRestartedEmpty(t *testing.T) {
	t.Parallel() // beside the other Redis tests only: each has its own processes
	for _, mode := range []string{"restart", "flushall"} {
		t.Run(mode, func(t *testing.T) { testRedisEmptied(t, mode == "flushall") })
	}
}

func testRedisEmptied(t *testing.T, flush bool) {
	const (
		topic       = "https://example.com/epoch"
		epochMetric = "herald_redis_epoch_changes_total"
		epochLog    = "the history in redis was replaced"
	)
	srv := redistest.Start(t, redistest.Options{})
	c := newTestClient(t)
	work, logs := t.TempDir(), t.TempDir()
	nodes := startRedisNodes(t, c, work, logs, srv.URL(), 2)
	var live []*sseWatch
	for i, n := range nodes {
		live = append(live, watchStream(t, c, n, fmt.Sprintf("node %d live", i), topic, ""))
	}
	var before []string
	for i := range 6 {
		id := fmt.Sprintf("old-%d", i)
		if r := publishTo(c, nodes[i%2], 5*time.Second, id, topic, id); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("publish %s: HTTP %d, %v", id, r.status, r.err)
		}
		before = append(before, id)
	}
	last := before[len(before)-1]
	for _, s := range live {
		s.waitID(t, last, 5*time.Second)
	}
	for _, n := range nodes {
		if v := n.metric(t, epochMetric); v != 0 {
			t.Fatalf("%s: %s = %v before Redis was emptied, want 0", n.name, epochMetric, v)
		}
	}

	t0 := time.Now()
	if flush {
		if r := srv.Do(t, "FLUSHALL"); r != "OK" {
			t.Fatalf("FLUSHALL: %s", r)
		}
	} else {
		srv.Stop()
		srv.Restart()
	}
	emptied := time.Since(t0)

	// Every node notices the new epoch, once.
	for _, n := range nodes {
		deadline := time.Now().Add(10 * time.Second)
		for n.metric(t, epochMetric) < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s still 0 10s after Redis was emptied", n.name, epochMetric)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%s: new epoch seen %v after Redis was emptied (emptying took %v)", n.name,
			time.Since(t0).Round(time.Millisecond), emptied.Round(time.Millisecond))
		if !n.logHas(epochLog) {
			t.Errorf("%s: no %q in the log", n.name, epochLog)
		}
	}
	// Live streams end, saying why, with a retry hint, after exactly the
	// old updates.
	for _, s := range live {
		s.waitEnded(t, 10*time.Second)
		s.mu.Lock()
		notes, retry := slices.Clone(s.notes), s.retry
		s.mu.Unlock()
		if len(notes) == 0 || !strings.HasPrefix(notes[len(notes)-1], "closed:") {
			t.Errorf("%s: stream ended without saying why; comments %q", s.name, notes)
		}
		if n, err := strconv.Atoi(retry); err != nil || n <= 0 {
			t.Errorf("%s: stream ended with retry %q, want a delay in ms", s.name, retry)
		}
		if got := s.ids(); !slices.Equal(got, before) {
			t.Errorf("%s: got %v before its end, want %v", s.name, got, before)
		}
	}

	// An update published before the clients come back (they wait 1 to
	// 5 s, the retry hint): it is in the new history, so a client told
	// earliest must get it.
	const early = "new-early"
	if r := publishTo(c, nodes[1], 5*time.Second, early, topic, early); r.err != nil || r.status != http.StatusOK {
		t.Fatalf("publish %s after Redis was emptied: HTTP %d, %v", early, r.status, r.err)
	}
	after := []string{early}
	// Clients come back with the id they had: told earliest.
	var resumed []*sseWatch
	for i, n := range nodes {
		s := watchStream(t, c, n, fmt.Sprintf("node %d resumed", i), topic, last)
		if got := s.header.Get("Mercure-Last-Event-ID"); got != "earliest" {
			t.Errorf("%s: Mercure-Last-Event-ID %q after the history was lost, want earliest", s.name, got)
		}
		resumed = append(resumed, s)
	}
	// Publishing works again, at once.
	for i := range 4 {
		id := fmt.Sprintf("new-%d", i)
		if r := publishTo(c, nodes[i%2], 5*time.Second, id, topic, id); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("publish %s after Redis was emptied: HTTP %d, %v", id, r.status, r.err)
		}
		after = append(after, id)
	}
	const sentinel = "sentinel"
	if r := publishTo(c, nodes[0], 5*time.Second, sentinel, topic, sentinel); r.err != nil || r.status != http.StatusOK {
		t.Fatalf("publish the sentinel: HTTP %d, %v", r.status, r.err)
	}
	want := append(slices.Clone(after), sentinel)
	for _, s := range resumed {
		s.waitID(t, sentinel, 10*time.Second)
		if got := s.ids(); !slices.Equal(got, want) {
			t.Errorf("%s: got %v, want %v", s.name, got, want)
		}
	}
	// The new history is what was published after the loss, on every node.
	for i, n := range nodes {
		s := watchStream(t, c, n, fmt.Sprintf("node %d from earliest", i), topic, "earliest")
		s.waitID(t, sentinel, 10*time.Second)
		if got := s.ids(); !slices.Equal(got, want) {
			t.Errorf("%s: got %v, want %v", s.name, got, want)
		}
	}
	for _, n := range nodes {
		if v := n.metric(t, epochMetric); v != 1 {
			t.Errorf("%s: %s = %v at the end, want 1 (one loss, seen once)", n.name, epochMetric, v)
		}
	}
}

// failoverCase is one run of TestRedisSentinelFailover.
type failoverCase struct {
	name     string
	kill     bool // SIGKILL the master instead of asking Sentinel for a failover
	replicas int
	wait     int // --redis-wait
}

// TestRedisSentinelFailover fails the master over under publish load,
// with herald nodes given the Sentinel URL, gracefully (SENTINEL
// FAILOVER) and by killing the master. Afterwards the whole history is
// read back on every node: with --redis-wait 1 no acknowledged update may
// be missing; without it the loss is measured and logged, not failed.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel() // beside the other Redis tests only: each has its own processes
	for _, fc := range []failoverCase{
		// --redis-wait counts every replica, so whichever is promoted has
		// every acknowledged update.
		{name: "graceful/wait", replicas: 1, wait: 1},
		{name: "graceful/nowait", replicas: 1},
		{name: "graceful/wait2of2", replicas: 2, wait: 2},
		// Two replicas, --redis-wait 1 would not do for a graceful
		// failover: Sentinel promotes one while the old master still
		// takes writes and the other replica still confirms them, until
		// the clients switch; that replica then resyncs from the new
		// master, dropping them (hundreds per failover on loopback). The
		// README says to count every replica.
		//
		// A killed master takes no writes after it is gone: one replica
		// confirming is enough there, and the other keeps the new master
		// writable with --redis-wait 1.
		{name: "kill/wait", kill: true, replicas: 2, wait: 1},
		{name: "kill/nowait", kill: true, replicas: 2},
	} {
		t.Run(fc.name, func(t *testing.T) { testFailover(t, fc) })
	}
}

func testFailover(t *testing.T, fc failoverCase) {
	const (
		topic      = "https://example.com/failover"
		publishers = 4
		// Each publisher publishes one update at a time, at most every
		// pace, and stops after maxEach or when told.
		pace    = 5 * time.Millisecond
		maxEach = 4000
		// settled is how many updates each publisher must have had
		// acknowledged after the switch before the load stops.
		settled = 10
	)
	master := redistest.Start(t, redistest.Options{})
	for range fc.replicas {
		redistest.Start(t, redistest.Options{ReplicaOf: master})
	}
	ss := redistest.StartSentinels(t, master, "herald", 3, 2)
	c := newTestClient(t)
	work, logs := t.TempDir(), t.TempDir()
	var extra []string
	if fc.wait > 0 {
		extra = append(extra, "--redis-wait", strconv.Itoa(fc.wait))
	}
	nodes := startRedisNodes(t, c, work, logs, ss.URL(0), 2, extra...)

	var live []*sseWatch
	for i, n := range nodes {
		live = append(live, watchStream(t, c, n, fmt.Sprintf("node %d live", i), topic, ""))
	}

	var (
		mu      sync.Mutex
		results = make([][]pubResult, publishers)
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	ackedSince := func(since time.Time) (total, least int) {
		mu.Lock()
		defer mu.Unlock()
		least = -1
		for _, rs := range results {
			n := 0
			for _, r := range rs {
				if r.err == nil && r.status == http.StatusOK && r.sent.After(since) {
					n++
				}
			}
			total += n
			if least < 0 || n < least {
				least = n
			}
		}
		return total, least
	}
	start := time.Now()
	for p := range publishers {
		wg.Go(func() {
			n := nodes[p%len(nodes)]
			for i := range maxEach {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("p%d-%d", p, i)
				r := publishTo(c, n, 5*time.Second, id, topic, id)
				mu.Lock()
				results[p] = append(results[p], r)
				mu.Unlock()
				time.Sleep(pace)
			}
		})
	}
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	t.Cleanup(stopLoad)
	waitAcked := func(what string, since time.Time, each int, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			if _, least := ackedSince(since); least >= each {
				return
			}
			if time.Now().After(deadline) {
				total, least := ackedSince(since)
				t.Fatalf("%s: after %v, %d acknowledged, the slowest publisher %d, want %d each", what, timeout, total, least, each)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitAcked("load before the failover", start, 50, 15*time.Second)

	old := ss.Master(t)
	tTrigger := time.Now()
	if fc.kill {
		master.Kill()
		deadline := time.Now().Add(30 * time.Second)
		for ss.Master(t) == old {
			if time.Now().After(deadline) {
				t.Fatalf("sentinels still name the killed master %s after 30s", old)
			}
			time.Sleep(20 * time.Millisecond)
		}
	} else {
		ss.Failover(t)
	}
	tSwitched := time.Now()
	waitAcked("load after the failover", tSwitched, settled, 30*time.Second)
	stopLoad()
	tStopped := time.Now()

	// Index every publish.
	type attempt struct {
		pubResult
		publisher int
	}
	var (
		acked               []attempt
		byID                = map[string]attempt{}
		refused, unanswered int
		firstAfter          time.Time // the first acknowledgement of a publish sent after the trigger
	)
	for p, rs := range results {
		for _, r := range rs {
			a := attempt{r, p}
			byID[r.id] = a
			switch {
			case r.err != nil:
				unanswered++
			case r.status == http.StatusOK:
				acked = append(acked, a)
				if r.sent.After(tTrigger) && (firstAfter.IsZero() || r.done.Before(firstAfter)) {
					firstAfter = r.done
				}
			case r.status == http.StatusServiceUnavailable:
				refused++
				if n, err := strconv.Atoi(r.retryAfter); err != nil || n <= 0 {
					t.Errorf("publish %s: 503 with Retry-After %q", r.id, r.retryAfter)
				}
			default:
				t.Errorf("publish %s: HTTP %d, want 200 or 503", r.id, r.status)
			}
		}
	}

	const sentinel = "sentinel"
	publishUntilOK(t, c, nodes[0], time.Now().Add(20*time.Second), sentinel, topic, sentinel)
	var history [][]string
	for i, n := range nodes {
		ids, attempts := readHistory(t, c, n, fmt.Sprintf("node %d history", i), topic, sentinel, 30*time.Second)
		if attempts > 1 {
			t.Logf("node %d: the history took %d subscriptions to read", i, attempts)
		}
		history = append(history, ids)
	}
	if !slices.Equal(history[0], history[1]) {
		t.Errorf("the nodes replay different histories: %d and %d updates", len(history[0]), len(history[1]))
	}
	h := history[0]
	at := make(map[string]int, len(h))
	for i, id := range h {
		if j, dup := at[id]; dup {
			t.Errorf("%s is in the history twice (positions %d and %d)", id, j, i)
		}
		at[id] = i
	}
	var lost []attempt
	for _, a := range acked {
		if _, ok := at[a.id]; !ok {
			lost = append(lost, a)
		}
	}
	// Each publisher's acknowledged updates are in the order it published them.
	for p := range publishers {
		prev := -1
		for _, r := range results[p] {
			if i, ok := at[r.id]; ok && r.err == nil && r.status == http.StatusOK {
				if i < prev {
					t.Errorf("publisher %d: %s is in the history before an update acknowledged earlier", p, r.id)
				}
				prev = i
			}
		}
	}
	unackedKept := 0
	for _, id := range h {
		a, ok := byID[id]
		switch {
		case id == sentinel:
		case !ok:
			t.Errorf("%s is in the history but was never published", id)
		case a.err != nil || a.status != http.StatusOK:
			unackedKept++
		}
	}
	// A live stream that stayed open got exactly the history; one that
	// ended (its node met a new epoch) is what a client resumes from.
	for _, w := range live {
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, _, ended, _ := w.snapshot()
			if !ended.IsZero() || slices.Contains(w.ids(), sentinel) || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		got := w.ids()
		_, _, ended, _ := w.snapshot()
		if ended.IsZero() {
			if !slices.Equal(got, h) {
				t.Errorf("%s: the stream stayed open but got %d updates that differ from the %d of the history", w.name, len(got), len(h))
			}
			continue
		}
		phantoms := 0
		for _, id := range got {
			if _, ok := at[id]; !ok {
				phantoms++
			}
		}
		w.mu.Lock()
		notes := slices.Clone(w.notes)
		w.mu.Unlock()
		t.Logf("%s: the stream ended %v after the trigger with %q, after %d updates, %d of them not in the final history",
			w.name, ended.Sub(tTrigger).Round(time.Millisecond), notes, len(got), phantoms)
	}
	var ackTimes []time.Time
	for _, a := range acked {
		ackTimes = append(ackTimes, a.done)
	}
	slices.SortFunc(ackTimes, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	for i := 1; i < len(ackTimes); i++ {
		if ackTimes[i].After(tTrigger) {
			longest = max(longest, ackTimes[i].Sub(ackTimes[i-1]))
		}
	}
	epochs := make([]float64, len(nodes))
	for i, n := range nodes {
		epochs[i] = n.metric(t, "herald_redis_epoch_changes_total")
	}
	t.Logf("%s: %d replicas, --redis-wait %v; master %s -> %s", fc.name, fc.replicas, fc.wait, old, ss.Master(t))
	t.Logf("publishes: %d acknowledged, %d refused 503, %d unanswered in 5s, over %v; %d in the history (%d of them not acknowledged)",
		len(acked), refused, unanswered, tStopped.Sub(start).Round(time.Millisecond), len(h)-1, unackedKept)
	t.Logf("failover: sentinels agreed %v after the trigger; first acknowledgement of a publish sent after the trigger %v after it; longest time without an acknowledgement %v; epoch changes per node %v",
		tSwitched.Sub(tTrigger).Round(time.Millisecond), firstAfter.Sub(tTrigger).Round(time.Millisecond),
		longest.Round(time.Millisecond), epochs)
	if len(lost) == 0 {
		t.Logf("LOST: 0 of %d acknowledged updates", len(acked))
		return
	}
	var b strings.Builder
	for i, a := range lost {
		if i == 20 {
			fmt.Fprintf(&b, "\n\t… and %d more", len(lost)-20)
			break
		}
		fmt.Fprintf(&b, "\n\t%s (publisher %d on node %d): sent %v, acknowledged %v after the trigger",
			a.id, a.publisher, a.publisher%len(nodes), a.sent.Sub(tTrigger).Round(time.Millisecond), a.done.Sub(tTrigger).Round(time.Millisecond))
	}
	first, last := lost[0].done, lost[0].done
	for _, a := range lost {
		if a.done.Before(first) {
			first = a.done
		}
		if a.done.After(last) {
			last = a.done
		}
	}
	summary := fmt.Sprintf("LOST: %d of %d acknowledged updates, acknowledged from %v to %v after the trigger:%s",
		len(lost), len(acked), first.Sub(tTrigger).Round(time.Millisecond), last.Sub(tTrigger).Round(time.Millisecond), b.String())
	if fc.wait > 0 {
		t.Error(summary)
	} else {
		t.Log(summary)
	}
}
