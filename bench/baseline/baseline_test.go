package baseline

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// event is one parsed SSE frame.
type event struct{ id, typ, data string }

// stream is an open subscription read frame by frame.
type stream struct {
	resp *http.Response
	rd   *bufio.Reader
}

func subscribe(t *testing.T, base string, topics ...string) *stream {
	t.Helper()
	q := url.Values{"topic": topics}
	req, err := http.NewRequestWithContext(t.Context(), "GET", base+Path+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer ignored")
	req.Header.Set("Last-Event-ID", "ignored")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("subscribe: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return &stream{resp: resp, rd: bufio.NewReader(resp.Body)}
}

// next reads the next frame, skipping comments; io.EOF when the stream ends.
func (s *stream) next() (event, error) {
	var ev event
	var data []string
	seen := false
	for {
		line, err := s.rd.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if seen {
				ev.data = strings.Join(data, "\n")
				return ev, nil
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			ev.id, seen = line[4:], true
		case strings.HasPrefix(line, "event: "):
			ev.typ, seen = line[7:], true
		case strings.HasPrefix(line, "data: "):
			data, seen = append(data, line[6:]), true
		}
	}
}

func publish(t *testing.T, base string, form url.Values) string {
	t.Helper()
	resp, err := http.PostForm(base+Path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("publish: %s %s", resp.Status, body)
	}
	return string(body)
}

func newHub(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	hub := New()
	ts := httptest.NewServer(hub)
	t.Cleanup(func() {
		hub.Close()
		ts.Close()
	})
	return hub, ts
}

func TestPublishReachesSubscriber(t *testing.T) {
	_, ts := newHub(t)
	s := subscribe(t, ts.URL, "https://example.com/books/1")

	id := publish(t, ts.URL, url.Values{
		"topic": {"https://example.com/books/1"}, "id": {"urn:x:1"}, "type": {"book"},
		"data": {"line one\nline two"},
	})
	if id != "urn:x:1" {
		t.Fatalf("publish answered %q, want the given id", id)
	}
	ev, err := s.next()
	if err != nil {
		t.Fatal(err)
	}
	if want := (event{"urn:x:1", "book", "line one\nline two"}); ev != want {
		t.Fatalf("got %+v, want %+v", ev, want)
	}

	// Without an id the hub makes one up and uses it on the stream.
	id = publish(t, ts.URL, url.Values{"topic": {"https://example.com/books/1"}, "data": {"x"}})
	if !strings.HasPrefix(id, "urn:uuid:") || len(id) != len("urn:uuid:")+36 {
		t.Fatalf("generated id %q", id)
	}
	if ev, err = s.next(); err != nil || ev.id != id || ev.data != "x" {
		t.Fatalf("got %+v, %v; want id %q", ev, err, id)
	}
}

func TestExactTopicFiltering(t *testing.T) {
	_, ts := newHub(t)
	a := subscribe(t, ts.URL, "a")
	ab := subscribe(t, ts.URL, "a", "b")
	all := subscribe(t, ts.URL, "*")

	// Neither a prefix, nor a pattern, nor a different case matches.
	for _, topic := range []string{"a/1", "A", "{a}", "b"} {
		publish(t, ts.URL, url.Values{"topic": {topic}, "id": {topic}})
	}
	publish(t, ts.URL, url.Values{"topic": {"z", "a"}, "id": {"last"}}) // any of its topics

	want := map[*stream][]string{
		a:   {"last"},
		ab:  {"b", "last"},
		all: {"a/1", "A", "{a}", "b", "last"},
	}
	for s, ids := range want {
		for _, id := range ids {
			ev, err := s.next()
			if err != nil {
				t.Fatal(err)
			}
			if ev.id != id {
				t.Fatalf("subscriber %v got %q, want %q", s.resp.Request.URL.RawQuery, ev.id, id)
			}
		}
	}
}

func TestCloseEndsStreams(t *testing.T) {
	hub, ts := newHub(t)
	streams := []*stream{subscribe(t, ts.URL, "a"), subscribe(t, ts.URL, "*")}
	hub.Close()
	for _, s := range streams {
		if _, err := s.next(); err != io.EOF {
			t.Fatalf("after Close: %v, want EOF", err)
		}
	}
	if n := hub.subscribers(); n != 0 {
		t.Fatalf("%d subscribers after Close", n)
	}
	resp, err := http.Get(ts.URL + Path + "?topic=a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("subscribe after Close: %s", resp.Status)
	}
	hub.Close() // idempotent
}

func TestDisconnectUnregisters(t *testing.T) {
	hub, ts := newHub(t)
	s := subscribe(t, ts.URL, "a")
	if n := hub.subscribers(); n != 1 {
		t.Fatalf("%d subscribers, want 1", n)
	}
	s.resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for hub.subscribers() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("subscriber still registered after its client left")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSlowSubscriberDropped(t *testing.T) {
	hub := New()
	defer hub.Close()
	slow := &subscriber{topics: []string{"a"}, ch: make(chan []byte, subscriberBuffer)}
	hub.add(slow)
	rec := httptest.NewRecorder()
	for range subscriberBuffer + 1 {
		req := httptest.NewRequest("POST", Path, strings.NewReader("topic=a&data=x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		hub.ServeHTTP(rec, req)
	}
	if n := hub.subscribers(); n != 0 {
		t.Fatalf("%d subscribers, want the full one dropped", n)
	}
	n := 0
	for range slow.ch {
		n++
	}
	if n != subscriberBuffer {
		t.Fatalf("dropped subscriber had %d frames queued, want %d", n, subscriberBuffer)
	}
}

func TestHeartbeat(t *testing.T) {
	hub, ts := newHub(t)
	hub.heartbeat = 10 * time.Millisecond
	s := subscribe(t, ts.URL, "a")
	line, err := s.rd.ReadString('\n')
	if err != nil || line != ":\n" {
		t.Fatalf("got %q, %v; want a heartbeat comment", line, err)
	}
}

func TestBadRequests(t *testing.T) {
	hub := New()
	defer hub.Close()
	for _, tc := range []struct {
		method, target, body string
		want                 int
	}{
		{"GET", Path, "", 400},
		{"POST", Path, "data=x", 400},
		{"POST", Path, "topic=%zz", 400},
		{"PUT", Path, "", 405},
		{"GET", "/elsewhere?topic=a", "", 404},
	} {
		req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		hub.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %s %q: %d, want %d", tc.method, tc.target, tc.body, rec.Code, tc.want)
		}
	}
}

func TestServeCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- ServeCommand(ctx, []string{"--addr", "127.0.0.1:0"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "baseline listening on ")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	base := "http://" + addr
	s := subscribe(t, base, "t")
	publish(t, base, url.Values{"topic": {"t"}, "id": {"1"}, "data": {"d"}})
	if ev, err := s.next(); err != nil || ev.id != "1" {
		t.Fatalf("got %+v, %v", ev, err)
	}

	// h2c with prior knowledge is served too.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	resp, err := h2c.PostForm(base+Path, url.Values{"topic": {"t"}, "id": {"2"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("h2c publish: %s %s", resp.Proto, resp.Status)
	}
	if ev, err := s.next(); err != nil || ev.id != "2" {
		t.Fatalf("got %+v, %v", ev, err)
	}
	h2c.CloseIdleConnections()

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServeCommand: %v", err)
	}
	if _, err := s.next(); err == nil {
		t.Fatal("stream still open after shutdown")
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestServeCommandBadArgs(t *testing.T) {
	var stderr strings.Builder
	if err := ServeCommand(t.Context(), []string{"extra"}, io.Discard, &stderr); err == nil {
		t.Fatal("accepted a stray argument")
	}
	if err := ServeCommand(t.Context(), []string{"--addr", "256.0.0.1:x"}, io.Discard, &stderr); err == nil {
		t.Fatal("listened on a bad address")
	}
}
