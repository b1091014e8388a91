package mercure_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
)

// TestPatternBudgetsHTTP: a subscription over the per-subscription budget
// is a 400, one that would take its subject's or the hub's patterns over
// budget a 429, each with a message naming the budget; exact topics never
// count, a pattern another subscription holds is free for the hub, and
// closing a stream gives its patterns back.
func TestPatternBudgetsHTTP(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	hubURL := fmt.Sprintf("http://%s%s", srv.Listener.Addr(), mercure.DefaultPath)
	public, _ := url.Parse(hubURL)
	eng := memory.New(memory.Options{})
	h, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1, MaxPatterns: 5, MaxPatternsPerSubject: 3})
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := mercure.ParseKey(subSecret, nil)
	v, err := mercure.NewValidator(mercure.TokenConfig{SubscriberKey: sk, Issuer: "herald", Audience: hubURL, Draft8: true, Base: hubURL, Matchers: h.Matchers()})
	if err != nil {
		t.Fatal(err)
	}
	handler, err := mercure.New(mercure.Config{Hub: h, Tokens: v, PublicURL: public, Draft8: true, Anonymous: true, MaxPatterns: 2, NoHijack: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = handler
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		h.EndStreams()
		srv.Close()
		h.Close()
		_ = eng.Close()
	}()

	token := func(sub string) string {
		tok, err := mercure.Mint(mercure.MintOptions{Key: sk, Subscribe: []string{"*"}, TTL: time.Hour, Issuer: "herald", Audience: hubURL, Subject: sub})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// get subscribes; a 200 stream stays open until the test ends, or
	// until its own cancel.
	get := func(subject string, patterns []int, exact ...string) (int, string, context.CancelFunc) {
		t.Helper()
		q := url.Values{}
		for _, p := range patterns {
			q.Add("match_urlpattern", fmt.Sprintf("https://example.com/p%d/:id", p))
		}
		for _, e := range exact {
			q.Add("match", e)
		}
		sctx, scancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(sctx, http.MethodGet, hubURL+"?"+q.Encode(), nil)
		if subject != "" {
			req.Header.Set("Authorization", "Bearer "+token(subject))
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			go func() { _, _ = io.Copy(io.Discard, resp.Body); resp.Body.Close() }()
			return resp.StatusCode, "", scancel
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		scancel()
		return resp.StatusCode, string(b), scancel
	}
	expect := func(status int, body string, wantStatus int, wantBody string) {
		t.Helper()
		if status != wantStatus || !strings.Contains(body, wantBody) {
			t.Fatalf("got %d %q, want %d with %q", status, body, wantStatus, wantBody)
		}
	}
	waitPatterns := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); h.Patterns() != n; {
			if time.Now().After(deadline) {
				t.Fatalf("hub holds %d patterns, want %d", h.Patterns(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	s, body, _ := get("", []int{1, 2, 3})
	expect(s, body, http.StatusBadRequest, "per-subscription pattern budget")
	s, body, _ = get("", []int{1, 2}, "https://example.com/a", "https://example.com/b", "*")
	expect(s, body, http.StatusOK, "")

	s, body, _ = get("alice", []int{3, 4})
	expect(s, body, http.StatusOK, "")
	s, body, _ = get("alice", []int{5, 6})
	expect(s, body, http.StatusTooManyRequests, "subject budget is 3")
	// Patterns alice holds already cost her nothing.
	s, body, _ = get("alice", []int{3, 4})
	expect(s, body, http.StatusOK, "")

	s, body, closeBob := get("bob", []int{1, 5})
	expect(s, body, http.StatusOK, "")
	waitPatterns(5)
	s, body, _ = get("carol", []int{6})
	expect(s, body, http.StatusTooManyRequests, "hub budget is 5")
	s, body, _ = get("carol", []int{1, 2})
	expect(s, body, http.StatusOK, "")

	// bob leaves: p5 is free again.
	closeBob()
	waitPatterns(4)
	s, body, _ = get("carol", []int{6})
	expect(s, body, http.StatusOK, "")

	// Every stream gone, the table keeps only what the cached grants
	// hold: their one "*" matcher.
	cancel()
	for deadline := time.Now().Add(5 * time.Second); h.Subscribers() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers left", h.Subscribers())
		}
		time.Sleep(time.Millisecond)
	}
	if n, p := h.Matchers().Len(), h.Patterns(); n != 1 || p != 0 {
		t.Fatalf("after every stream closed: %d matchers in the table, %d patterns", n, p)
	}
}
