package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/sse"
)

// subToken runs `herald token` in dir, with the development key there,
// for a subscriber sub granted each matcher.
func subToken(t *testing.T, dir, hubURL, sub string, matchers ...string) string {
	t.Helper()
	args := []string{"--key", "@herald-data/dev.key", "--aud", hubURL, "--sub", sub}
	for _, m := range matchers {
		args = append(args, "--subscribe", m)
	}
	return heraldToken(t, dir, args...)
}

// heraldToken runs `herald token` with args in dir ("" for the test's
// own) and returns the token.
func heraldToken(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(heraldBin, append([]string{"token"}, args...)...)
	cmd.Dir = dir
	cmd.Env = heraldEnv()
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("herald token %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// sseStream is a subscription read in the background.
type sseStream struct {
	events chan sse.Event
	cancel context.CancelFunc
	done   chan struct{}
}

// ended is closed once the stream has ended.
func (s *sseStream) ended() <-chan struct{} { return s.done }

func openStream(t *testing.T, target, token string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("subscribe %s: %d %s", target, resp.StatusCode, b)
	}
	s := &sseStream{events: make(chan sse.Event, 256), cancel: cancel, done: make(chan struct{})}
	done := s.done
	go func() {
		defer close(done)
		defer close(s.events)
		defer resp.Body.Close()
		r := sse.NewReader(bufio.NewReader(resp.Body))
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			s.events <- ev
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// subDoc reads the next event's subscription document.
func (s *sseStream) subDoc(t *testing.T) (match string, active bool) {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		var d struct {
			Match  string `json:"match"`
			Active bool   `json:"active"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatalf("event %q: %v", ev.Data, err)
		}
		return d.Match, d.Active
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return "", false
}

var cursorRE = regexp.MustCompile(`last-event-id="([^"]+)"`)

// Without a grace period, a hub that stops announces the end of every
// subscription it held before it goes: a watcher that follows the events
// from a cursor taken before the restart learns, from the restarted hub's
// history, that they are gone.
func TestSubscriptionsEndAtShutdown(t *testing.T) {
	work, logs := t.TempDir(), t.TempDir()
	addr := freeAddr(t)
	h := startHub(t, work, logs, addr, "--subscriptions", "--subscriptions-grace", "0")
	hubURL := h.hubURL()
	const watched = "/.well-known/mercure/subscriptions/*"
	watchTok := subToken(t, work, hubURL, "watcher", "urlpattern:"+watched)
	w := openStream(t, hubURL+"?match_urlpattern="+url.QueryEscape(watched), watchTok)
	if m, active := w.subDoc(t); m != watched || !active {
		t.Fatalf("watcher's own event: %s %v", m, active)
	}
	const topic = "https://example.com/doc/1"
	openStream(t, hubURL+"?match="+url.QueryEscape(topic), subToken(t, work, hubURL, "ann", topic))
	if m, active := w.subDoc(t); m != topic || !active {
		t.Fatalf("ann's event: %s %v", m, active)
	}

	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/.well-known/mercure/subscriptions", nil)
	req.Header.Set("Authorization", "Bearer "+subToken(t, work, hubURL, "reader", "*"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cur := cursorRE.FindStringSubmatch(resp.Header.Get("Link"))
	if resp.StatusCode != http.StatusOK || cur == nil || strings.Count(string(body), `"active":true`) != 2 {
		t.Fatalf("subscriptions API: %d, Link %q: %s", resp.StatusCode, resp.Header.Get("Link"), body)
	}

	if err := h.interrupt(15 * time.Second); err != nil {
		t.Fatalf("hub ended with %s after SIGINT", exitCode(err))
	}
	h = startHub(t, work, logs, addr, "--subscriptions", "--subscriptions-grace", "0")
	w2 := openStream(t, hubURL+"?match_urlpattern="+url.QueryEscape(watched)+"&last_event_id="+url.QueryEscape(cur[1]), watchTok)
	ended := map[string]bool{}
	for range 3 { // the two ends, and the new watcher's own beginning
		m, active := w2.subDoc(t)
		if !active {
			ended[m] = true
		}
	}
	if !ended[topic] || !ended[watched] {
		t.Fatalf("after the restart, the ends announced were %v; want ann's and the first watcher's", ended)
	}
}

// A restart within the grace period floods nobody: the stopping hub keeps
// its subscribers, the restarted one takes them back, and those that come
// back keep their identifiers; a watcher following from a cursor taken
// before the restart sees no end and no beginning of theirs.
func TestSubscriptionsKeptAcrossRestart(t *testing.T) {
	work, logs := t.TempDir(), t.TempDir()
	addr := freeAddr(t)
	args := []string{"--subscriptions", "--subscriptions-grace", "1m"}
	h := startHub(t, work, logs, addr, args...)
	hubURL := h.hubURL()
	const watched = "/.well-known/mercure/subscriptions/*"
	watchTok := subToken(t, work, hubURL, "watcher", "urlpattern:"+watched)
	w := openStream(t, hubURL+"?match_urlpattern="+url.QueryEscape(watched), watchTok)
	w.subDoc(t)
	const topic = "https://example.com/doc/1"
	annTok := subToken(t, work, hubURL, "ann", topic)
	ann := openStream(t, hubURL+"?match="+url.QueryEscape(topic), annTok)
	w.subDoc(t)
	reader := subToken(t, work, hubURL, "reader", "*")
	before, cur := subscribers(t, addr, reader)
	if len(before) != 2 {
		t.Fatalf("before the restart: %v", before)
	}

	if err := h.interrupt(15 * time.Second); err != nil {
		t.Fatalf("hub ended with %s after SIGINT", exitCode(err))
	}
	ann.cancel()
	w.cancel()
	startHub(t, work, logs, addr, args...)
	// Both come back, as EventSource would.
	openStream(t, hubURL+"?match="+url.QueryEscape(topic), annTok)
	w2 := openStream(t, hubURL+"?match_urlpattern="+url.QueryEscape(watched)+"&last_event_id="+url.QueryEscape(cur), watchTok)
	after, _ := subscribers(t, addr, reader)
	if len(after) != len(before) {
		t.Fatalf("after the restart: %v, before: %v", after, before)
	}
	for m, id := range before {
		if after[m] != id {
			t.Fatalf("subscriber of %s was %s before the restart, %s after", m, id, after[m])
		}
	}
	// The sentinel: the first event after the cursor is a newcomer's.
	const sentinel = "https://example.com/sentinel"
	openStream(t, hubURL+"?match="+url.QueryEscape(sentinel), subToken(t, work, hubURL, "zed", sentinel))
	if m, active := w2.subDoc(t); m != sentinel || !active {
		t.Fatalf("first event after the restart: %s (active %v), want the sentinel's beginning", m, active)
	}
}

// subscribers reads the subscriptions API of addr: subscriber by match,
// and the cursor.
func subscribers(t *testing.T, addr, token string) (map[string]string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/.well-known/mercure/subscriptions", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		Subscriptions []struct{ Match, Subscriber string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	cur := cursorRE.FindStringSubmatch(resp.Header.Get("Link"))
	if cur == nil {
		t.Fatalf("no cursor in %q", resp.Header.Get("Link"))
	}
	out := map[string]string{}
	for _, s := range c.Subscriptions {
		if _, dup := out[s.Match]; dup {
			t.Fatalf("two subscriptions of %s: %+v", s.Match, c.Subscriptions)
		}
		out[s.Match] = s.Subscriber
	}
	return out, cur[1]
}
