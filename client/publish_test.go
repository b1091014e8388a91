package client_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-hub/herald/client"
)

// TestPublishForm checks the form and headers of a publication.
func TestPublishForm(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "urn:uuid:hub-id")
		})
		cfg := f.config()
		cfg.PublisherToken = "pub-token"
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		u := client.Update{
			Topics: []string{"https://example.com/1", "https://example.com/alt"}, Data: "a&b=c\nd",
			ID: "urn:uuid:1", Type: "t", Retry: 1500 * time.Millisecond, Private: true,
		}
		id, err := c.Publish(t.Context(), u)
		if err != nil || id != "urn:uuid:hub-id" {
			t.Fatalf("Publish = %q, %v", id, err)
		}
		if _, err := c.Publish(t.Context(), client.Update{Topics: []string{"x"}}); err != nil {
			t.Fatal(err)
		}
		reqs := f.requests()
		r := reqs[0]
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer pub-token" ||
			r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			t.Errorf("request %s %v", r.Method, r.Header)
		}
		want := map[string][]string{"topic": u.Topics, "data": {u.Data}, "id": {u.ID}, "type": {"t"}, "retry": {"1500"}, "private": {"on"}}
		if len(r.PostForm) != len(want) {
			t.Errorf("form %v, want %v", r.PostForm, want)
		}
		for k, v := range want {
			if !slices.Equal(r.PostForm[k], v) {
				t.Errorf("form %s = %q, want %q", k, r.PostForm[k], v)
			}
		}
		if got := reqs[1].PostForm; len(got) != 2 || got.Get("topic") != "x" || !got.Has("data") {
			t.Errorf("minimal form %v", got)
		}
		// Sequential publishes share one keep-alive connection.
		for range 10 {
			if _, err := c.Publish(t.Context(), client.Update{Topics: []string{"x"}}); err != nil {
				t.Fatal(err)
			}
		}
		if n := f.protos.conns.Load(); n != 1 {
			t.Errorf("%d connections for 12 publishes, want 1", n)
		}
		if _, err := c.Publish(t.Context(), client.Update{}); err == nil {
			t.Error("update without topic: accepted")
		}
		f.protos.check(t, m)
	})
}

// TestPublishRetries503 checks that a 503 is retried, with a bound.
func TestPublishRetries503(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		var mu sync.Mutex
		failures := 2
		retryAfter := ""
		f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if failures > 0 {
				failures--
				if retryAfter != "" {
					w.Header().Set("Retry-After", retryAfter)
				}
				http.Error(w, "not stored", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "id")
		})
		c, err := client.New(f.config())
		if err != nil {
			t.Fatal(err)
		}
		if id, err := c.Publish(t.Context(), client.Update{Topics: []string{"t"}}); err != nil || id != "id" {
			t.Fatalf("Publish = %q, %v", id, err)
		}
		if n := len(f.requests()); n != 3 {
			t.Errorf("%d requests, want 3", n)
		}

		mu.Lock()
		failures = 10
		mu.Unlock()
		_, err = c.Publish(t.Context(), client.Update{Topics: []string{"t"}})
		if he, ok := errors.AsType[*client.HubError](err); !ok || he.Status != http.StatusServiceUnavailable || he.Message != "not stored" {
			t.Errorf("Publish = %#v, want the 503", err)
		}
		if n := len(f.requests()); n != 6 {
			t.Errorf("%d requests, want 3 + 3", n)
		}

		// A Retry-After beyond what a publish waits ends it at once.
		mu.Lock()
		retryAfter = "30"
		mu.Unlock()
		_, err = c.Publish(t.Context(), client.Update{Topics: []string{"t"}})
		if he, ok := errors.AsType[*client.HubError](err); !ok || he.RetryAfter != 30*time.Second {
			t.Errorf("Publish = %#v, want the 503 with its Retry-After", err)
		}
		if n := len(f.requests()); n != 7 {
			t.Errorf("%d requests, want 7", n)
		}
	})
}

// TestPublish4xx checks that a 4xx is neither retried nor counted by
// the breaker.
func TestPublish4xx(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
			if n%2 == 0 {
				w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope"`)
				http.Error(w, "no grant", http.StatusForbidden)
				return
			}
			http.Error(w, "slow down", http.StatusTooManyRequests)
		})
		cfg := f.config()
		cfg.Breaker.ConsecutiveFailures = 2
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			_, err := c.Publish(t.Context(), client.Update{Topics: []string{"t"}})
			he, ok := errors.AsType[*client.HubError](err)
			if !ok || he.Status/100 != 4 {
				t.Fatalf("publish %d: %v", i, err)
			}
			if he.Status == http.StatusForbidden && he.Challenge != `Bearer error="insufficient_scope"` {
				t.Errorf("challenge %q", he.Challenge)
			}
		}
		if n := len(f.requests()); n != 10 {
			t.Errorf("%d requests, want 10", n)
		}
	})
}

// TestBreakerOverLoopback opens the breaker with consecutive 5xx over a
// real connection and checks that it then fails fast.
func TestBreakerOverLoopback(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
			http.Error(w, "broken", http.StatusInternalServerError)
		})
		cfg := f.config()
		cfg.Breaker = client.BreakerSettings{ConsecutiveFailures: 3, OpenTimeout: time.Hour}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			_, err := c.Publish(t.Context(), client.Update{Topics: []string{"t"}})
			if he, ok := errors.AsType[*client.HubError](err); !ok || he.Status != http.StatusInternalServerError {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
		if _, err := c.Publish(t.Context(), client.Update{Topics: []string{"t"}}); !errors.Is(err, client.ErrCircuitOpen) {
			t.Errorf("publish with the breaker open: %v", err)
		}
		if n := len(f.requests()); n != 3 {
			t.Errorf("%d requests, want 3 (500 is not retried; open fails fast)", n)
		}
	})
}

// TestPublishDialRetried checks that a hub that refuses connections is
// retried, then reported.
func TestPublishDialRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	c, err := client.New(client.Config{Hub: "http://" + addr + "/hub", MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Publish(t.Context(), client.Update{Topics: []string{"t"}})
	if op, ok := errors.AsType[*net.OpError](err); !ok || op.Op != "dial" {
		t.Errorf("Publish = %v, want a dial error", err)
	}
}

// TestUnsent checks which transport errors prove the request was not
// received.
func TestUnsent(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	cases := []struct {
		name        string
		err         error
		writeFailed bool
		want        bool
	}{
		{"dial", dial, false, true},
		{"read after a full write", read, false, false},
		{"EOF after a full write", io.ErrUnexpectedEOF, false, false},
		{"write failed", read, true, true},
		{"server closed idle", errors.New(`Post "http://h/": http: server closed idle connection`), false, true},
	}
	for _, tc := range cases {
		if got := client.Unsent(tc.err, tc.writeFailed); got != tc.want {
			t.Errorf("%s: Unsent = %v, want %v", tc.name, got, tc.want)
		}
	}
}
