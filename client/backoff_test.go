package client_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/herald-hub/herald/client"
)

// TestBackoff checks the pure backoff function: the ceiling doubles from
// twice the base up to the limit, the delay stays in [base, ceiling],
// and a base over the limit wins.
func TestBackoff(t *testing.T) {
	lowest := func(int64) int64 { return 0 }
	highest := func(n int64) int64 { return n - 1 }
	base, limit := 100*time.Millisecond, 3*time.Second
	wantCeil := []time.Duration{200, 400, 800, 1600, 3000, 3000, 3000}
	for f, w := range wantCeil {
		w *= time.Millisecond
		if got := client.Backoff(base, limit, f, highest); got != w {
			t.Errorf("failures %d: ceiling %v, want %v", f, got, w)
		}
		if got := client.Backoff(base, limit, f, lowest); got != base {
			t.Errorf("failures %d: floor %v, want %v", f, got, base)
		}
	}
	if got := client.Backoff(base, limit, 1<<20, highest); got != limit {
		t.Errorf("many failures: %v, want %v", got, limit)
	}
	if got := client.Backoff(5*time.Second, limit, 3, highest); got != 5*time.Second {
		t.Errorf("base over the limit: %v, want the base", got)
	}
	if got := client.Backoff(0, limit, 0, lowest); got != time.Millisecond {
		t.Errorf("zero base: %v, want 1ms", got)
	}
	if got := client.Backoff(time.Duration(1<<62), time.Duration(1<<62+1<<61), 100, highest); got != time.Duration(1<<62+1<<61) {
		t.Errorf("huge values: %v", got)
	}
	// The real jitter spreads over the whole range.
	seen := map[bool]bool{}
	for range 1000 {
		d := client.Backoff(base, limit, 2, rand.Int64N)
		if d < base || d > 800*time.Millisecond {
			t.Fatalf("delay %v outside [100ms, 800ms]", d)
		}
		seen[d < 450*time.Millisecond] = true
	}
	if len(seen) != 2 {
		t.Error("jitter does not spread the delays")
	}
}

// script is an in-memory transport, so that tests run in a synctest
// bubble: answer gets the 1-based request number. It records when each
// request arrived.
type script struct {
	mu     sync.Mutex
	times  []time.Time
	reqs   []*http.Request
	answer func(n int, r *http.Request) (*http.Response, error)
}

func (s *script) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	s.reqs = append(s.reqs, r)
	n := len(s.times)
	s.mu.Unlock()
	return s.answer(n, r)
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times)
}

// gaps returns the delays between consecutive requests.
func (s *script) gaps() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var g []time.Duration
	for i := 1; i < len(s.times); i++ {
		g = append(g, s.times[i].Sub(s.times[i-1]))
	}
	return g
}

// streamAnswer answers an event stream of body; hold keeps it open until
// the request ends.
func streamAnswer(r *http.Request, body string, hold bool) *http.Response {
	var rd io.Reader = strings.NewReader(body)
	if hold {
		rd = io.MultiReader(rd, ctxReader{r.Context()})
	}
	return &http.Response{
		StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: io.NopCloser(rd), Request: r,
	}
}

// statusAnswer answers status with headers in pairs.
func statusAnswer(r *http.Request, status int, hdr ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(http.StatusText(status))), Request: r}
}

type ctxReader struct{ ctx context.Context }

func (c ctxReader) Read([]byte) (int, error) {
	<-c.ctx.Done()
	return 0, c.ctx.Err()
}

// scripted returns a client over s with cfg's settings.
func scripted(t *testing.T, s *script, cfg client.Config) *client.Client {
	t.Helper()
	cfg.Hub, cfg.HTTPClient = "http://hub.test/.well-known/mercure", &http.Client{Transport: s}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitRequests sleeps in the bubble until s has n requests.
func waitRequests(t *testing.T, s *script, n int) {
	t.Helper()
	for i := 0; s.count() < n; i++ {
		if i > 1e6 {
			t.Fatalf("%d requests, waiting for %d", s.count(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// within fails unless lo <= d <= hi.
func within(t *testing.T, what string, d, lo, hi time.Duration) {
	t.Helper()
	if d < lo || d > hi {
		t.Errorf("%s: %v, want within [%v, %v]", what, d, lo, hi)
	}
}

// TestServerRetry checks that the hub's retry field is the base delay of
// the reconnection, below MinBackoff and above MaxBackoff alike.
func TestServerRetry(t *testing.T) {
	for _, tc := range []struct {
		retry  string
		lo, hi time.Duration
	}{
		{"10", 10 * time.Millisecond, 20 * time.Millisecond},
		{"5000", 5 * time.Second, 5 * time.Second},
		{"0", time.Millisecond, 2 * time.Millisecond},
	} {
		t.Run(tc.retry, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &script{answer: func(n int, r *http.Request) (*http.Response, error) {
					if n == 1 {
						return streamAnswer(r, "retry: "+tc.retry+"\n"+frame("1", "a"), false), nil
					}
					return streamAnswer(r, "", true), nil
				}}
				c := scripted(t, s, client.Config{MaxBackoff: time.Second}) // MinBackoff: the default 100ms
				sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}})
				if err != nil {
					t.Fatal(err)
				}
				waitRequests(t, s, 2)
				within(t, "reconnection delay", s.gaps()[0], tc.lo, tc.hi)
				sub.Close()
			})
		})
	}
}

// TestReconnectBackoff checks that failed reconnections back off with a
// growing, capped ceiling, that Retry-After is honoured, and that a
// connection that delivered events resets the backoff.
func TestReconnectBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{answer: func(n int, r *http.Request) (*http.Response, error) {
			switch {
			case n == 1 || n == 8:
				return streamAnswer(r, frame(string(rune('0'+n)), "x"), false), nil
			case n == 7:
				return statusAnswer(r, http.StatusServiceUnavailable, "Retry-After", "2"), nil
			case n == 6:
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
			case n < 8:
				return statusAnswer(r, http.StatusServiceUnavailable), nil
			}
			return streamAnswer(r, "", true), nil
		}}
		ms := time.Millisecond
		c := scripted(t, s, client.Config{MinBackoff: 10 * ms, MaxBackoff: 80 * ms})
		var conns connects
		sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}, OnConnect: conns.add})
		if err != nil {
			t.Fatal(err)
		}
		waitRequests(t, s, 9)
		g := s.gaps()
		within(t, "after a stream with events", g[0], 10*ms, 20*ms)
		within(t, "after 1 failure", g[1], 10*ms, 40*ms)
		within(t, "after 2 failures", g[2], 10*ms, 80*ms)
		within(t, "after 3 failures", g[3], 10*ms, 80*ms)
		within(t, "after 4 failures", g[4], 10*ms, 80*ms)
		within(t, "after a dial error", g[5], 10*ms, 80*ms)
		within(t, "after Retry-After: 2, capped by MaxBackoff", g[6], 80*ms, 80*ms)
		within(t, "reset after a stream with events", g[7], 10*ms, 20*ms)
		got := conns.get()
		if len(got) != 3 || got[1] != (client.ConnectInfo{Attempt: 8, Requested: "1", ResumedFrom: "", PossibleLoss: true}) || got[2].Requested != "8" {
			t.Errorf("OnConnect %+v", got)
		}
		sub.Close()
	})
}

// TestRetryAfterHonoured checks that a Retry-After longer than the
// backoff delays the reconnection.
func TestRetryAfterHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{answer: func(n int, r *http.Request) (*http.Response, error) {
			switch n {
			case 1:
				return streamAnswer(r, frame("1", "x"), false), nil
			case 2:
				return statusAnswer(r, http.StatusTooManyRequests, "Retry-After", "2"), nil
			}
			return streamAnswer(r, "", true), nil
		}}
		c := scripted(t, s, client.Config{MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Second})
		sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}})
		if err != nil {
			t.Fatal(err)
		}
		waitRequests(t, s, 3)
		within(t, "after 429 with Retry-After: 2", s.gaps()[1], 2*time.Second, 2*time.Second)
		sub.Close()
	})
}

// TestStableConnectionResetsBackoff checks that a connection that lasted
// long resets the backoff even if it delivered nothing.
func TestStableConnectionResetsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{answer: func(n int, r *http.Request) (*http.Response, error) {
			switch {
			case n == 1: // the first connection, ended at once
				return streamAnswer(r, "", false), nil
			case n <= 5:
				return statusAnswer(r, http.StatusBadGateway), nil
			case n == 6: // a quiet stream that lasts a minute, then drops
				pr, pw := io.Pipe()
				go func() {
					time.Sleep(time.Minute)
					_ = pw.Close()
				}()
				resp := streamAnswer(r, "", false)
				resp.Body = pr
				return resp, nil
			}
			return streamAnswer(r, "", true), nil
		}}
		ms := time.Millisecond
		c := scripted(t, s, client.Config{MinBackoff: 10 * ms, MaxBackoff: time.Second})
		sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}})
		if err != nil {
			t.Fatal(err)
		}
		waitRequests(t, s, 7)
		g := s.gaps()
		within(t, "after a quiet stream that lasted a minute", g[5]-time.Minute, 10*ms, 20*ms)
		sub.Close()
	})
}

// TestBreaker checks that consecutive transport errors open the breaker,
// that it then fails fast, and that it closes again after its timeout
// once the hub is back.
func TestBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		healthy := false
		s := &script{answer: func(n int, r *http.Request) (*http.Response, error) {
			mu.Lock()
			defer mu.Unlock()
			if healthy {
				return statusAnswer(r, http.StatusOK), nil
			}
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
		}}
		var changes []string
		c := scripted(t, s, client.Config{MinBackoff: 10 * time.Millisecond, Breaker: client.BreakerSettings{
			ConsecutiveFailures: 3, OpenTimeout: 5 * time.Second,
			OnStateChange: func(from, to string) { changes = append(changes, from+">"+to) },
		}})
		u := client.Update{Topics: []string{"t"}}
		// One publish, three attempts (two retries of a dial error),
		// three failures: the breaker opens.
		_, err := c.Publish(t.Context(), u)
		if op, ok := errors.AsType[*net.OpError](err); !ok || op.Op != "dial" {
			t.Errorf("first publish: %v", err)
		}
		if n := s.count(); n != 3 {
			t.Errorf("%d attempts, want 3", n)
		}
		start := time.Now()
		if _, err := c.Publish(t.Context(), u); !errors.Is(err, client.ErrCircuitOpen) {
			t.Errorf("publish while open: %v", err)
		}
		if s.count() != 3 || time.Since(start) != 0 {
			t.Errorf("open breaker: %d attempts after %v", s.count(), time.Since(start))
		}
		time.Sleep(5*time.Second + time.Millisecond)
		mu.Lock()
		healthy = true
		mu.Unlock()
		if _, err := c.Publish(t.Context(), u); err != nil {
			t.Errorf("publish after the timeout: %v", err)
		}
		if want := []string{"closed>open", "open>half-open", "half-open>closed"}; !slices.Equal(changes, want) {
			t.Errorf("state changes %v, want %v", changes, want)
		}
	})
}

// TestPublishNotRetried checks failures that must not be retried: a
// transport error after the request may have reached the hub, and 5xx
// other than 503.
func TestPublishNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{answer: func(n int, r *http.Request) (*http.Response, error) {
			if n == 1 {
				return nil, io.ErrUnexpectedEOF
			}
			return statusAnswer(r, http.StatusBadGateway), nil
		}}
		c := scripted(t, s, client.Config{})
		if _, err := c.Publish(t.Context(), client.Update{Topics: []string{"t"}}); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Publish = %v", err)
		}
		if _, err := c.Publish(t.Context(), client.Update{Topics: []string{"t"}}); err == nil {
			t.Error("502 accepted")
		}
		if n := s.count(); n != 2 {
			t.Errorf("%d attempts, want 2", n)
		}
	})
}

// TestPublishRespectsContext checks that the backoff between attempts
// ends with the context, and that a delay past the deadline is not
// waited for at all.
func TestPublishRespectsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{answer: func(n int, r *http.Request) (*http.Response, error) {
			return statusAnswer(r, http.StatusServiceUnavailable, "Retry-After", "1"), nil
		}}
		c := scripted(t, s, client.Config{})
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			time.Sleep(500 * time.Millisecond)
			cancel()
		}()
		start := time.Now()
		_, err := c.Publish(ctx, client.Update{Topics: []string{"t"}})
		if !errors.Is(err, context.Canceled) || time.Since(start) != 500*time.Millisecond {
			t.Errorf("Publish = %v after %v", err, time.Since(start))
		}

		ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		_, err = c.Publish(ctx, client.Update{Topics: []string{"t"}})
		if he, ok := errors.AsType[*client.HubError](err); !ok || he.Status != http.StatusServiceUnavailable || time.Since(start) != 0 {
			t.Errorf("Publish = %v after %v, want the 503 at once", err, time.Since(start))
		}
		if n := s.count(); n != 2 {
			t.Errorf("%d attempts, want 2", n)
		}
	})
}
