package mercure_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/mercure"
)

var retryField = regexp.MustCompile(`(?m)^retry: (\d+)$`)

// checkShed fails unless r is how a shed subscription is answered: an
// event stream (so that EventSource reconnects by itself) holding the
// reason and a retry hint within the shed window, and nothing else.
func checkShed(t *testing.T, r response, reason string) {
	t.Helper()
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("shed answered %d %q; want 200 text/event-stream", r.status, r.header.Get("Content-Type"))
	}
	if !strings.Contains(r.body, ": shed: "+reason) {
		t.Fatalf("shed body %q does not name %q", r.body, reason)
	}
	m := retryField.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("shed body %q has no retry field", r.body)
	}
	if ms, _ := strconv.Atoi(m[1]); ms < 5000 || ms > 30000 {
		t.Fatalf("retry %dms outside the shed window [5000, 30000]", ms)
	}
	if strings.Contains(r.body, "data:") || strings.Contains(r.body, "id:") {
		t.Fatalf("shed body %q carries an event", r.body)
	}
}

// TestShedRetrySpread: shed clients are told to come back at different
// times, so that they do not return as one wave.
func TestShedRetrySpread(t *testing.T) {
	reg := prometheus.NewRegistry()
	th := newHub(t, http1, options{draft7: true, draft8: true, anonymous: true, tune: func(c *mercure.Config) {
		c.Shed = func() string { return mercure.ShedOverload }
		c.Registerer = reg
	}})
	seen := map[string]bool{}
	for range 20 {
		r := th.do(http.MethodGet, th.url+"?topic=a", "", nil)
		checkShed(t, r, mercure.ShedOverload)
		seen[retryField.FindStringSubmatch(r.body)[1]] = true
	}
	if len(seen) < 10 { // 20 draws from 25,001 values
		t.Fatalf("20 shed clients got only %d distinct retry delays", len(seen))
	}
}

// TestShed: while Shed answers a reason, new subscriptions are sent away
// with it (a resuming one keeps its cursor), counted by reason; streams
// already open and publishes go on; once it answers "" they are admitted.
func TestShed(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		var reason atomic.Value
		reason.Store("")
		reg := prometheus.NewRegistry()
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true, tune: func(c *mercure.Config) {
			c.Shed = func() string { return reason.Load().(string) }
			c.Registerer = reg
		}})
		open := th.subscribe("topic=a", nil)
		reason.Store(mercure.ShedOverload)
		r := th.do(http.MethodGet, th.url+"?topic=a", "", map[string]string{"Last-Event-ID": "cursor-1"})
		checkShed(t, r, mercure.ShedOverload)
		if got := r.header.Get("Mercure-Last-Event-ID"); got != "cursor-1" {
			t.Errorf("shed resume answered Mercure-Last-Event-ID %q; the cursor stands where the client left it", got)
		}
		reason.Store(mercure.ShedConnections)
		checkShed(t, th.do(http.MethodGet, th.url+"?topic=a", "", nil), mercure.ShedConnections)

		id := th.mustPublish("topic=a&data=x")
		if got := open.next(t).ID; got != id {
			t.Fatalf("open stream got %q, want %q", got, id)
		}
		reason.Store("")
		late := th.subscribe("topic=a", nil)
		id = th.mustPublish("topic=a&data=y")
		for _, s := range []*stream{open, late} {
			if got := s.next(t).ID; got != id {
				t.Fatalf("got %q, want %q", got, id)
			}
		}
		for r, want := range map[string]float64{mercure.ShedOverload: 1, mercure.ShedConnections: 1, mercure.ShedSubject: 0} {
			if got := metricValue(t, reg, "herald_subscriptions_shed_total", r); got != want {
				t.Errorf("shed %s counted %v, want %v", r, got, want)
			}
		}
	})
}

// TestStreamsPerSubject: a token sub holds at most MaxStreamsPerSubject
// streams on the node; one more is shed, another sub is not affected,
// and a stream that ends gives its place back.
func TestStreamsPerSubject(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		reg := prometheus.NewRegistry()
		th := newHub(t, m, options{draft7: true, draft8: true, tune: func(c *mercure.Config) {
			c.MaxStreamsPerSubject = 2
			c.Registerer = reg
		}})
		auth := func(sub string) map[string]string {
			return map[string]string{"Authorization": "Bearer " + th.tokenFor(sub, mercure.ActionSubscribe, false, "*")}
		}
		a1 := th.subscribe("topic=a", auth("alice"))
		a2 := th.subscribe("topic=a", auth("alice"))
		checkShed(t, th.do(http.MethodGet, th.url+"?topic=a", "", auth("alice")), mercure.ShedSubject)
		b := th.subscribe("topic=a", auth("bob"))
		// Tokens without sub (a legacy token) are not counted.
		legacy := map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, true, "*")}
		l1, l2, l3 := th.subscribe("topic=a", legacy), th.subscribe("topic=a", legacy), th.subscribe("topic=a", legacy)

		id := th.mustPublish("topic=a&data=x")
		for _, s := range []*stream{a1, a2, b, l1, l2, l3} {
			if got := s.next(t).ID; got != id {
				t.Fatalf("got %q, want %q", got, id)
			}
		}
		a1.close()
		// The hub notices the departure on its next write to the stream.
		deadline := time.Now().Add(10 * time.Second)
		for {
			th.mustPublish("topic=a&data=nudge")
			s, r := th.trySubscribe(http.MethodGet, "topic=a", "", auth("alice"))
			if s != nil {
				break
			}
			if r.status != http.StatusOK {
				t.Fatalf("subscribe answered %d %s", r.status, r.body)
			}
			if time.Now().After(deadline) {
				t.Fatal("alice's closed stream never gave its place back")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := metricValue(t, reg, "herald_subscriptions_shed_total", mercure.ShedSubject); got < 1 {
			t.Errorf("subject sheds counted %v", got)
		}
	})
}

// TestPublishRate: a publisher over PublishRate gets 429 with Retry-After
// and its update is not stored; another publisher has its own bucket;
// publishers without sub are told apart by address.
func TestPublishRate(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		reg := prometheus.NewRegistry()
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true, tune: func(c *mercure.Config) {
			c.PublishRate = 0.01 // a token every 100 s: the burst is all a test sees
			c.PublishBurst = 2
			c.Registerer = reg
		}})
		sub := th.subscribe("topic=a", nil)
		pub := func(who, form string) response {
			return th.do(http.MethodPost, th.url, form, map[string]string{
				"Authorization": "Bearer " + th.tokenFor(who, mercure.ActionPublish, false, "*"),
			})
		}
		for i := range 2 {
			if r := pub("p1", "topic=a&id=ok"+strconv.Itoa(i)); r.status != http.StatusOK {
				t.Fatalf("publish %d within the burst: %d %s", i, r.status, r.body)
			}
		}
		r := pub("p1", "topic=a&id=refused")
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("publish over the rate: %d %s", r.status, r.body)
		}
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
			t.Fatalf("Retry-After %q, want whole seconds in [1, 100]", r.header.Get("Retry-After"))
		}
		if !strings.Contains(r.body, "rate") {
			t.Errorf("429 body %q does not say why", r.body)
		}
		// Another sub: its own bucket, and the sentinel that shows the
		// refused update was never stored.
		if r := pub("p2", "topic=a&id=sentinel"); r.status != http.StatusOK {
			t.Fatalf("another publisher: %d %s", r.status, r.body)
		}
		if got := strings.Join(sub.ids(t, 3), ","); got != "ok0,ok1,sentinel" {
			t.Fatalf("subscriber got %s", got)
		}
		if got := metricValue(t, reg, "herald_publishes_rate_limited_total", ""); got != 1 {
			t.Errorf("rate-limited publishes counted %v, want 1", got)
		}
		// Legacy tokens carry no sub: their publisher is the address, one
		// bucket for both tokens here.
		legacy := func() response {
			return th.do(http.MethodPost, th.url, "topic=a", map[string]string{
				"Authorization": "Bearer " + th.token(mercure.ActionPublish, true, "*"),
			})
		}
		codes := []int{legacy().status, legacy().status, legacy().status}
		if codes[0] != 200 || codes[1] != 200 || codes[2] != http.StatusTooManyRequests {
			t.Fatalf("three publishes from one address without sub: %v, want 200 200 429", codes)
		}
	})
}

// TestClientAddr: X-Forwarded-For is believed only from trusted proxies,
// and only up to the first hop that is not one.
func TestClientAddr(t *testing.T) {
	th := newHub(t, http1, options{draft7: true, draft8: true, tune: func(c *mercure.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}})
	for _, c := range []struct{ peer, xff, want string }{
		{"192.0.2.1:5000", "198.51.100.7", "192.0.2.1"},                          // untrusted peer: its word is not taken
		{"10.0.0.1:5000", "198.51.100.7", "198.51.100.7"},                        // a trusted proxy names the client
		{"10.0.0.1:5000", "203.0.113.9, 198.51.100.7, 10.0.0.2", "198.51.100.7"}, // the first untrusted hop from the right
		{"10.0.0.1:5000", "", "10.0.0.1"},                                        // no header
		{"10.0.0.1:5000", "not-an-address, 10.0.0.3", "10.0.0.3"},                // an unreadable hop stops the walk
		{"[::1]:5000", "[2001:db8::1]", "::1"},                                   // brackets are not an address
		{"[::1]:5000", "2001:db8::1", "2001:db8::1"},
		{"[::ffff:10.0.0.1]:5000", "198.51.100.7", "198.51.100.7"}, // a mapped IPv4 peer is the IPv4 address
	} {
		r := httptest.NewRequest(http.MethodPost, th.url, nil)
		r.RemoteAddr = c.peer
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := mercure.ClientAddr(th.h, r).String(); got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
}

// TestKeyedRateSweep: buckets that have refilled are dropped once the map
// grows, so publishers that came once and left do not accumulate.
func TestKeyedRateSweep(t *testing.T) {
	k := mercure.NewKeyedRate(10, 1)
	t0 := time.Unix(1_000_000, 0)
	for i := range 5000 {
		if ok, _ := k.Allow("p"+strconv.Itoa(i), t0); !ok {
			t.Fatalf("first publish of p%d refused", i)
		}
	}
	if ok, retry := k.Allow("p0", t0); ok || retry != 100*time.Millisecond {
		t.Fatalf("second publish of p0 at once: ok %v, retry %v; want refused for 100ms", ok, retry)
	}
	// A second later every bucket is full again; once new publishers have
	// doubled the map since its last sweep (at 4,096), they are swept.
	t1 := t0.Add(time.Second)
	for i := range 4000 {
		k.Allow("q"+strconv.Itoa(i), t1)
	}
	if n := k.Len(); n > 4000 {
		t.Fatalf("%d buckets after the old ones refilled; the sweep should have dropped them", n)
	}
}

// metricValue is the value of the counter name (with reason, when not
// empty) in reg; zero when it is not there.
func metricValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if reason == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
