package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/herald-hub/herald/internal/testcert"
)

// shedPage opens EventSources on demand (window.connect(name)), each with
// its own record of opens, errors and messages.
const shedPage = `<!doctype html>
<meta charset="utf-8">
<title>herald shed test</title>
<script>
window.streams = {};
window.connect = (name) => {
  const st = {opens: 0, errors: 0, received: []};
  st.es = new EventSource(%s);
  st.es.onopen = () => { st.opens++; };
  st.es.onerror = () => { st.errors++; };
  st.es.onmessage = (e) => { st.received.push(e.lastEventId); };
  window.streams[name] = st;
};
window.state = () => JSON.stringify(Object.fromEntries(Object.entries(window.streams).map(
  ([k, st]) => [k, {opens: st.opens, errors: st.errors, received: st.received, readyState: st.es.readyState}])));
</script>
`

type shedStream struct {
	Opens      int      `json:"opens"`
	Errors     int      `json:"errors"`
	Received   []string `json:"received"`
	ReadyState int      `json:"readyState"`
}

// TestBrowserRecoversAfterShed: a browser's EventSource sent away by a
// limit (here the second stream of one token sub, with
// --max-subscriptions-per-sub 1) comes back by itself after the hub's
// retry hint, and is admitted once the first stream has gone; the hub
// counts the shed subscription.
func TestBrowserRecoversAfterShed(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is not installed at %s: run `make test`, which installs it (scripts/install-test-deps.sh): %v", chromiumPath, err)
	}
	// HTTP/1.1 in clear, and HTTP/2 over TLS with the test's own
	// certificate, which the browser is told to accept.
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) { browserShed(t, proto) })
	}
}

func browserShed(t *testing.T, proto string) {
	work, logs, profile := t.TempDir(), t.TempDir(), t.TempDir()
	addr, admin := freeAddr(t), freeAddr(t)
	scheme := "http"
	flags := []string{"--admin-addr", admin, "--max-subscriptions-per-sub", "1"}
	var browserFlags []chromedp.ExecAllocatorOption
	client := &http.Client{Timeout: 5 * time.Second}
	if proto == "h2" {
		scheme = "https"
		cert, key := testcert.Write(t)
		flags = append(flags, "--tls-cert", cert, "--tls-key", key)
		browserFlags = append(browserFlags, chromedp.Flag("ignore-certificate-errors", true))
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true} //nolint:gosec // the test's own certificate
	}
	hubURL := scheme + "://" + addr + "/.well-known/mercure"
	const topic = "https://example.com/shed"

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		// Minted once the hub has made its development key.
		tok := subscriberToken(t, work, hubURL, "alice")
		src, _ := json.Marshal(hubURL + "?" + url.Values{"topic": {topic}, "authorization": {tok}}.Encode())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, shedPage, src)
	}))
	t.Cleanup(page.Close)

	startHub(t, work, logs, addr, append([]string{"--cors-origins", page.URL}, flags...)...)
	pubTok := mintToken(t, work, hubURL)
	publish := func(id string) {
		t.Helper()
		st, body, err := postForm(t.Context(), client, hubURL, pubTok, url.Values{"topic": {topic}, "id": {id}, "data": {id}})
		if err != nil || st != http.StatusOK {
			t.Fatalf("publish %s: %d %s %v", id, st, body, err)
		}
	}

	ctx := startBrowser(t, profile, browserFlags...)
	// The protocol of every response the hub sent, as the browser saw it.
	var seen struct {
		mu     sync.Mutex
		protos []string
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventResponseReceived); ok && strings.HasPrefix(e.Response.URL, hubURL) {
			seen.mu.Lock()
			if !slices.Contains(seen.protos, e.Response.Protocol) {
				seen.protos = append(seen.protos, e.Response.Protocol)
			}
			seen.mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("listen to the browser: %v", err)
	}
	if err := runBrowser(t, ctx, 10*time.Second, chromedp.Navigate(page.URL)); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	state := func() map[string]shedStream {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.state()`))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		var s map[string]shedStream
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			t.Fatalf("page state %q: %v", raw, err)
		}
		return s
	}
	wait := func(what string, timeout time.Duration, cond func(map[string]shedStream) bool) map[string]shedStream {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			s := state()
			if cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("waited %v for %s; the page has %+v", timeout, what, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	eval := func(js string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](js)); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
	}

	eval(`window.connect("first")`)
	wait("the first stream to open", 10*time.Second, func(s map[string]shedStream) bool { return s["first"].Opens == 1 })
	publish("p1")
	wait("p1 on the first stream", 5*time.Second, func(s map[string]shedStream) bool { return len(s["first"].Received) == 1 })

	// The second stream of alice is shed: the browser sees a stream open
	// and end, and stays in CONNECTING (0) to come back by itself.
	eval(`window.connect("second")`)
	s := wait("the second stream to be shed", 10*time.Second, func(s map[string]shedStream) bool { return s["second"].Errors >= 1 })
	if st := s["second"]; st.ReadyState != 0 || len(st.Received) != 0 {
		t.Fatalf("shed stream: %+v; want readyState 0 (reconnecting) and nothing received", st)
	}
	if n := scrapeMetric(t, admin, `herald_subscriptions_shed_total{reason="subject"}`); n != 1 {
		t.Fatalf("herald_subscriptions_shed_total{reason=subject} = %v, want 1", n)
	}

	// The first goes; the second is admitted at its next try, 5 to 30 s
	// after it was shed, and gets what is published then.
	eval(`window.streams.first.es.close()`)
	wait("the second stream to be admitted", 40*time.Second, func(s map[string]shedStream) bool {
		return s["second"].ReadyState == 1 && s["second"].Opens >= 2
	})
	publish("p2")
	s = wait("p2 on the second stream", 5*time.Second, func(s map[string]shedStream) bool { return len(s["second"].Received) == 1 })
	if got := s["second"].Received; got[0] != "p2" {
		t.Errorf("second stream received %v, want [p2]", got)
	}
	// The browser spoke the protocol under test to the hub.
	seen.mu.Lock()
	protos := slices.Clone(seen.protos)
	seen.mu.Unlock()
	if !slices.Contains(protos, proto) {
		t.Errorf("the browser reached the hub over %v, want %s", protos, proto)
	}
	t.Logf("second stream: opens=%d errors=%d; protocols %v", s["second"].Opens, s["second"].Errors, protos)
}

// subscriberToken mints a subscriber token for sub with the hub's
// development key (which the hub writes into dir at its first start).
func subscriberToken(t *testing.T, dir, hubURL, sub string) string {
	cmd := exec.Command(heraldBin, "token", "--key", "@herald-data/dev.key", "--subscribe", "*", "--sub", sub, "--aud", hubURL)
	cmd.Dir = dir
	cmd.Env = heraldEnv()
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("herald token: %v", err)
		return ""
	}
	return strings.TrimSpace(string(out))
}
