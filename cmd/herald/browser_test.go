package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const chromiumPath = "/usr/bin/chromium"

// browserPage is the cross-origin page the browser test loads: a plain
// EventSource on the hub, with everything it sees kept in window globals.
const browserPage = `<!doctype html>
<meta charset="utf-8">
<title>herald browser test</title>
<script>
window.received = [];
window.opens = 0;
window.errors = 0;
window.es = new EventSource(%s + '?match=' + encodeURIComponent(%s));
window.es.onopen = () => { window.opens++; };
window.es.onerror = () => { window.errors++; };
window.es.onmessage = (e) => { window.received.push({id: e.lastEventId, data: e.data}); };
</script>
`

// pageState is what the page has seen so far.
type pageState struct {
	Received []struct {
		ID   string `json:"id"`
		Data string `json:"data"`
	} `json:"received"`
	Opens      int `json:"opens"`
	Errors     int `json:"errors"`
	ReadyState int `json:"readyState"`
}

func (s pageState) ids() []string {
	ids := make([]string, len(s.Received))
	for i, m := range s.Received {
		ids[i] = m.ID
	}
	return ids
}

// TestBrowserResumesAcrossRestart checks that a real browser's EventSource,
// on a page of another origin, rides out a graceful hub restart by itself:
// it reconnects with Last-Event-ID, gets the updates published while it
// was away from the durable history, then the live ones, each exactly once.
func TestBrowserResumesAcrossRestart(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is not installed at %s: run `make test`, which installs it (scripts/install-test-deps.sh): %v", chromiumPath, err)
	}
	work := t.TempDir()
	logs := t.TempDir()
	profile := t.TempDir()
	addr := freeAddr(t)
	hubURL := "http://" + addr + "/.well-known/mercure"
	const topic = "https://example.com/browser"

	hubJS, _ := json.Marshal(hubURL)
	topicJS, _ := json.Marshal(topic)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, browserPage, hubJS, topicJS)
	}))
	t.Cleanup(page.Close) // after the browser is gone: cleanups run last-in first-out
	origin := page.URL    // http://127.0.0.1:PORT, another origin than the hub's

	h := startHub(t, work, logs, addr, "--cors-origins", origin)
	tok := mintToken(t, work, hubURL)
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	publish := func(id string, extra ...string) {
		t.Helper()
		form := url.Values{"topic": {topic}, "id": {id}, "data": {"update " + id}}
		for i := 0; i+1 < len(extra); i += 2 {
			form.Set(extra[i], extra[i+1])
		}
		st, body, err := postForm(t.Context(), client, hubURL, tok, form)
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		if st != http.StatusOK || body != id {
			t.Fatalf("publish %s: HTTP %d %q, want 200 %q", id, st, body, id)
		}
	}

	ctx := startBrowser(t, profile)
	if err := runBrowser(t, ctx, 10*time.Second, chromedp.Navigate(page.URL)); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	// The open event fires once the hub has registered the subscription
	// and sent the headers, so updates published from now on reach it.
	waitPage(t, ctx, "the EventSource to open", 10*time.Second, func(s pageState) bool { return s.Opens >= 1 })

	// retry=300 is the browser's reconnection delay until the hub's
	// closing words at shutdown replace it with one from 1 to 5 s.
	publish("e1", "retry", "300")
	for i := 2; i <= 5; i++ {
		publish("e" + strconv.Itoa(i))
	}
	waitPage(t, ctx, "e1..e5", 5*time.Second, func(s pageState) bool { return len(s.Received) >= 5 })

	if err := h.interrupt(5 * time.Second); err != nil {
		t.Fatalf("hub ended with %s after SIGINT, want exit status 0", exitCode(err))
	}
	startHub(t, work, logs, addr, "--cors-origins", origin)
	// At once, while the browser waits to reconnect: these come back to it
	// from the history when it resumes after e5.
	for i := 6; i <= 8; i++ {
		publish("e" + strconv.Itoa(i))
	}
	if s := pageNow(t, ctx); s.Opens >= 2 {
		// Possible when the restart takes longer than the retry delay;
		// then e6..e8 may have come live rather than from the history.
		t.Logf("the browser had reconnected by the time e6..e8 were published (page has %v)", s.ids())
	}
	waitPage(t, ctx, "the EventSource to reconnect", 10*time.Second, func(s pageState) bool { return s.Opens >= 2 })
	publish("e9")
	publish("e10")
	// A sentinel last: a duplicate would show up before it.
	publish("e11")
	waitPage(t, ctx, "e1..e11", 5*time.Second, func(s pageState) bool {
		n := len(s.Received)
		return n > 0 && s.Received[n-1].ID == "e11"
	})

	s := pageNow(t, ctx)
	var want []string
	for i := 1; i <= 11; i++ {
		want = append(want, "e"+strconv.Itoa(i))
	}
	if !slices.Equal(s.ids(), want) {
		t.Errorf("the page received %v, want %v, each once, in order", s.ids(), want)
	}
	for _, m := range s.Received {
		if m.Data != "update "+m.ID {
			t.Errorf("message %s carries %q, want %q", m.ID, m.Data, "update "+m.ID)
		}
	}
	if s.Opens < 2 {
		t.Errorf("the EventSource opened %d times, want it to reconnect by itself (>= 2)", s.Opens)
	}
	if s.ReadyState != 1 {
		t.Errorf("EventSource.readyState = %d at the end, want 1 (OPEN)", s.ReadyState)
	}
	t.Logf("opens=%d errors=%d", s.Opens, s.Errors)
}

// startBrowser starts headless Chromium with a fresh profile and returns
// the context of its first tab. t.Cleanup closes the browser and makes
// sure no process of it is left.
func startBrowser(t *testing.T, profile string, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	var out bytes.Buffer // Chromium's own output, shown when the test fails
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(profile),
		chromedp.CombinedOutput(&lockedWriter{w: &out}),
	}, extra...)...,
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// Close the browser gracefully, then free the allocator, which
		// waits for the process to exit.
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		if err := chromedp.Cancel(cctx); err != nil {
			t.Logf("close the browser: %v", err)
		}
		ccancel()
		cancel()
		allocCancel()
		if left := browserLeftovers(profile, 5*time.Second); len(left) > 0 {
			t.Errorf("browser processes still running after close: %v", left)
		}
		if t.Failed() {
			// Without D-Bus, Chromium logs many harmless dbus errors.
			var lines []string
			for l := range strings.Lines(out.String()) {
				if !strings.Contains(l, "dbus/") {
					lines = append(lines, l)
				}
			}
			t.Logf("Chromium output (dbus noise left out):\n%s", strings.Join(lines, ""))
		}
	})
	// The first run starts the browser; it must not carry a timeout, which
	// would end the browser with it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// browserLeftovers waits up to timeout for every process started with
// --user-data-dir=profile to exit, and kills and returns those that do not.
// Chromium's helpers (zygote, network service) are separate processes.
func browserLeftovers(profile string, timeout time.Duration) []int {
	want := []byte("--user-data-dir=" + profile)
	find := func() []int {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			if slices.ContainsFunc(bytes.Split(cmdline, []byte{0}), func(a []byte) bool { return bytes.Equal(a, want) }) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	deadline := time.Now().Add(timeout)
	for {
		pids := find()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				if p, err := os.FindProcess(pid); err == nil {
					_ = p.Kill()
				}
			}
			return pids
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runBrowser runs browser actions bounded by timeout.
func runBrowser(t *testing.T, ctx context.Context, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return chromedp.Do(tctx, steps...)
}

const pageStateJS = `JSON.stringify({received: window.received, opens: window.opens, errors: window.errors, readyState: window.es.readyState})`

// pageNow reads the page's state.
func pageNow(t *testing.T, ctx context.Context) pageState {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := chromedp.Run(tctx, chromedp.Evaluate[string](pageStateJS))
	if err != nil {
		t.Fatalf("read the page state: %v", err)
	}
	var s pageState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("page state %q: %v", raw, err)
	}
	return s
}

// waitPage polls the page until cond holds, and fails the test after
// timeout, showing what the page has.
func waitPage(t *testing.T, ctx context.Context, what string, timeout time.Duration, cond func(pageState) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := pageNow(t, ctx)
		if cond(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; the page has received %v, opens=%d errors=%d readyState=%d",
				timeout, what, s.ids(), s.Opens, s.Errors, s.ReadyState)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// lockedWriter serializes writes from the allocator's goroutine with the
// read in the cleanup.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
