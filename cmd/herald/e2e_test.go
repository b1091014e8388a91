package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/sse"
)

// TestQuickStart follows the README quick start as a new user does: the
// binary in development mode, curl to subscribe and publish, `herald token`
// for the publisher token. Then it checks what the README promises about
// durability: a subscriber that comes back with Last-Event-ID gets exactly
// what it missed, across a graceful restart and across kill -9.
func TestQuickStart(t *testing.T) {
	requireCurl(t)
	work := t.TempDir() // the user's working directory: herald-data/ lands here
	logs := t.TempDir()
	addr := freeAddr(t)
	const topic = "https://example.com/books/1"

	// 1. Start the hub with no configuration at all.
	h := startHub(t, work, logs, addr)
	if banner, _ := os.ReadFile(h.stdout); !bytes.Contains(banner, []byte("DEVELOPMENT MODE")) {
		t.Errorf("no development banner on stdout:\n%s", banner)
	}
	if _, err := os.Stat(work + "/herald-data/dev.key"); err != nil {
		t.Fatalf("development key: %v", err)
	}
	hubURL := h.hubURL()
	subURL := hubURL + "?match=" + url.QueryEscape(topic)

	// 2. Subscribe, get a token, publish, see the update arrive.
	sub := startCurl(t, logs, "-N", subURL)
	sub.waitHeaders(5 * time.Second)
	tok := mintToken(t, work, hubURL)
	const dune = `{"title":"Dune"}`
	id1 := curlPublish(t, hubURL, tok, "topic="+topic, "data="+dune)
	got := sub.waitEvents(1, 5*time.Second)
	expectEvents(t, "live subscriber", got, []sse.Event{{ID: id1, Data: dune}})
	sub.stop()

	// 3. Two updates the subscriber misses, then a graceful restart.
	id2 := curlPublish(t, hubURL, tok, "topic="+topic, "data=second")
	id3 := curlPublish(t, hubURL, tok, "topic="+topic, "data=third")
	if err := h.interrupt(5 * time.Second); err != nil {
		t.Fatalf("hub ended with %s after SIGINT, want exit status 0", exitCode(err))
	}
	h = startHub(t, work, logs, addr)

	// 4. Resume from the last update seen, before anything new is
	// published: exactly the two missed updates come back, in order.
	res := startCurl(t, logs, "-N", "-H", "Last-Event-ID: "+id1, subURL)
	if hd := res.waitHeaders(5 * time.Second); hd.Get("Mercure-Last-Event-ID") != id1 {
		t.Errorf("Mercure-Last-Event-ID = %q, want %q (the id resumed after)", hd.Get("Mercure-Last-Event-ID"), id1)
	}
	res.waitEvents(2, 5*time.Second)
	got = res.quiet(500 * time.Millisecond)
	expectEvents(t, "resume after graceful restart", got, []sse.Event{
		{ID: id2, Data: "second"},
		{ID: id3, Data: "third"},
	})
	res.stop()

	// 5. An acknowledged update survives a crash.
	id4 := curlPublish(t, hubURL, tok, "topic="+topic, "data=fourth")
	h.kill()
	if !strings.HasPrefix(exitCode(h.err), "killed by") {
		t.Fatalf("hub ended with %s, want killed by SIGKILL", exitCode(h.err))
	}
	h = startHub(t, work, logs, addr)
	res = startCurl(t, logs, "-N", "-H", "Last-Event-ID: "+id3, subURL)
	if hd := res.waitHeaders(5 * time.Second); hd.Get("Mercure-Last-Event-ID") != id3 {
		t.Errorf("after kill -9: Mercure-Last-Event-ID = %q, want %q", hd.Get("Mercure-Last-Event-ID"), id3)
	}
	res.waitEvents(1, 5*time.Second)
	got = res.quiet(500 * time.Millisecond)
	expectEvents(t, "resume after kill -9", got, []sse.Event{{ID: id4, Data: "fourth"}})
	res.stop()

	if err := h.interrupt(5 * time.Second); err != nil {
		t.Errorf("hub ended with %s after SIGINT, want exit status 0", exitCode(err))
	}
}

// requireCurl fails the test when curl is missing: the quick start is
// about the real curl, so a stand-in would not test it.
func requireCurl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed: run `make test`, which installs it (scripts/install-test-deps.sh)")
	}
}

// curlArgs are prepended to every curl command line: errors on stderr but
// no progress meter, and no proxy from the environment between curl and a
// loopback hub.
var curlArgs = []string{"-sS", "--noproxy", "*"}

// curlPublish publishes with `curl -d field...` and returns the event id,
// the body of the 200 response.
func curlPublish(t *testing.T, hubURL, token string, fields ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	args := append(curlArgs[:len(curlArgs):len(curlArgs)],
		"--max-time", "5", "-w", "\n%{http_code}", "-H", "Authorization: Bearer "+token)
	for _, f := range fields {
		args = append(args, "-d", f)
	}
	cmd := exec.CommandContext(ctx, "curl", append(args, hubURL)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("curl publish %v: %v\n%s", fields, err, ee.Stderr)
		}
		t.Fatalf("curl publish %v: %v", fields, err)
	}
	body, code, _ := cutLast(string(out), "\n")
	if code != "200" {
		t.Fatalf("publish %v: HTTP %s: %s", fields, code, body)
	}
	if body == "" {
		t.Fatalf("publish %v: 200 with an empty body, want the event id", fields)
	}
	return body
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return "", s, false
}

// curlStream is a running `curl -D - ...` whose output (response headers,
// then the event stream) goes to a file that the test reads as it grows.
type curlStream struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    string
	errOut string
	done   chan struct{}
	err    error
}

func startCurl(t *testing.T, logDir string, args ...string) *curlStream {
	t.Helper()
	outf, err := os.CreateTemp(logDir, "curl-*.out")
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	errf, err := os.Create(outf.Name() + ".stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	args = append(append(curlArgs[:len(curlArgs):len(curlArgs)], "-D", "-"), args...)
	s := &curlStream{t: t, out: outf.Name(), errOut: errf.Name(), done: make(chan struct{})}
	s.cmd = exec.Command("curl", args...)
	s.cmd.Stdout, s.cmd.Stderr = outf, errf
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start curl: %v", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(s.stop)
	return s
}

// stop kills curl, as Ctrl-C does, and waits for it.
func (s *curlStream) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("curl (pid %d) survived SIGKILL for 10s", s.cmd.Process.Pid)
	}
}

// snapshot parses what curl has written so far. ok is false until the
// response headers are complete.
func (s *curlStream) snapshot() (status int, hd http.Header, events []sse.Event, ok bool) {
	raw, err := os.ReadFile(s.out)
	if err != nil {
		s.t.Fatal(err)
	}
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return 0, nil, nil, false
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(head, "\r\n\r\n"...))))
	line, err := tp.ReadLine()
	if err != nil {
		s.t.Fatalf("curl output: %v\n%s", err, raw)
	}
	// "HTTP/1.1 200 OK"
	if f := strings.Fields(line); len(f) >= 2 {
		status, _ = strconv.Atoi(f[1])
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		s.t.Fatalf("curl output: response headers: %v\n%s", err, raw)
	}
	r := sse.NewReader(bytes.NewReader(body))
	for {
		ev, err := r.Next()
		if err != nil {
			break // io.EOF, with any unfinished event left for later
		}
		events = append(events, ev)
	}
	return status, http.Header(mh), events, true
}

// waitHeaders waits for the response headers and requires a 200. Headers
// come once the hub has registered the subscription, so an update
// published after waitHeaders returns reaches this subscriber.
func (s *curlStream) waitHeaders(timeout time.Duration) http.Header {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		status, hd, _, ok := s.snapshot()
		if ok {
			if status != http.StatusOK {
				raw, _ := os.ReadFile(s.out)
				s.t.Fatalf("subscribe: HTTP %d, want 200:\n%s", status, raw)
			}
			return hd
		}
		s.checkRunning(deadline, "response headers")
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEvents waits until at least n events have arrived and returns all
// that have.
func (s *curlStream) waitEvents(n int, timeout time.Duration) []sse.Event {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, _, events, _ := s.snapshot(); len(events) >= n {
			return events
		}
		s.checkRunning(deadline, fmt.Sprintf("%d events", n))
		time.Sleep(10 * time.Millisecond)
	}
}

// quiet waits d, the time an unexpected extra event would need to show up,
// then returns every event received.
func (s *curlStream) quiet(d time.Duration) []sse.Event {
	time.Sleep(d)
	_, _, events, _ := s.snapshot()
	return events
}

func (s *curlStream) checkRunning(deadline time.Time, what string) {
	s.t.Helper()
	select {
	case <-s.done:
		raw, _ := os.ReadFile(s.out)
		stderr, _ := os.ReadFile(s.errOut)
		s.t.Fatalf("curl ended (%v) while waiting for %s:\n%s%s", s.err, what, raw, stderr)
	default:
	}
	if time.Now().After(deadline) {
		raw, _ := os.ReadFile(s.out)
		s.t.Fatalf("no %s in time; curl got:\n%s", what, raw)
	}
}

// expectEvents compares ids and data of the received events with want.
func expectEvents(t *testing.T, what string, got, want []sse.Event) {
	t.Helper()
	show := func(evs []sse.Event) string {
		var b strings.Builder
		for _, e := range evs {
			fmt.Fprintf(&b, "\n\tid=%q data=%q", e.ID, e.Data)
		}
		return b.String()
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].ID == want[i].ID && got[i].Data == want[i].Data
	}
	if !ok {
		t.Errorf("%s: got %d events:%s\nwant %d:%s", what, len(got), show(got), len(want), show(want))
	}
}
