package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-hub/herald/admin"
	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
	"github.com/herald-hub/herald/sse"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	pubSecret = "publisher-secret-publisher-secret-0123"
	subSecret = "subscriber-secret-subscriber-secret-01"
)

type env struct {
	t      *testing.T
	base   string // scheme://host
	hubURL string
	client *http.Client
	pubKey *mercure.Key
	subKey *mercure.Key
}

type setup struct {
	open          bool
	subscriptions bool
}

// newEnv serves a hub, its Mercure handler and the admin API on one
// loopback listener, HTTP/1.1 or HTTP/2 (TLS).
func newEnv(t *testing.T, h2 bool, s setup) *env {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	scheme := "http"
	if h2 {
		scheme = "https"
	}
	base := scheme + "://" + srv.Listener.Addr().String()
	hubURL := base + mercure.DefaultPath
	eng := memory.New(memory.Options{})
	hb, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := mercure.ParseKey(pubSecret, nil)
	sk, _ := mercure.ParseKey(subSecret, nil)
	v, err := mercure.NewValidator(mercure.TokenConfig{PublisherKey: pk, SubscriberKey: sk, Issuer: "herald", Audience: hubURL, Draft7: true, Draft8: true, Base: hubURL})
	if err != nil {
		t.Fatal(err)
	}
	public, _ := url.Parse(hubURL)
	mh, err := mercure.New(mercure.Config{Hub: hb, Tokens: v, PublicURL: public, Draft7: true, Draft8: true, Subscriptions: s.subscriptions, SubscriptionGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	adm, err := admin.New(admin.Config{Hub: hb, Mercure: mh, Tokens: v, Open: s.open, Node: "test-node", Version: "v-test", Connections: func() int { return 7 }})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/admin/") {
			adm.ServeHTTP(w, r)
			return
		}
		mh.ServeHTTP(w, r)
	})
	if h2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = mh.Streams().Shutdown(ctx, hb.EndStreams)
		srv.Close()
		mh.Streams().Wait()
		mh.Close(ctx)
		hb.Close()
		_ = eng.Close()
	})
	return &env{t: t, base: base, hubURL: hubURL, client: srv.Client(), pubKey: pk, subKey: sk}
}

func run(t *testing.T, f func(t *testing.T, h2 bool)) {
	for _, h2 := range []bool{false, true} {
		name := "h1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) { f(t, h2) })
	}
}

func (e *env) mint(o mercure.MintOptions) string {
	e.t.Helper()
	o.TTL, o.Issuer, o.Audience = time.Hour, "herald", e.hubURL
	if o.Key == nil {
		o.Key = e.pubKey
	}
	tok, err := mercure.Mint(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) adminToken() string { return e.mint(mercure.MintOptions{Admin: true}) }

type resp struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(method, path, token, form string) resp {
	e.t.Helper()
	var body io.Reader
	if form != "" {
		body = strings.NewReader(form)
	}
	req, _ := http.NewRequest(method, e.base+path, body)
	if form != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	r, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, string(b)}
}

func (e *env) publish(topic, data string) {
	e.t.Helper()
	tok := e.mint(mercure.MintOptions{Publish: []string{"*"}})
	if r := e.do(http.MethodPost, mercure.DefaultPath, tok, url.Values{"topic": {topic}, "data": {data}}.Encode()); r.status != http.StatusOK {
		e.t.Fatalf("publish: %d %s", r.status, r.body)
	}
}

// stream is an open subscription read in the background.
type stream struct {
	events chan sse.Event
	raw    *strings.Builder
	mu     sync.Mutex
	done   chan struct{}
	cancel context.CancelFunc
}

func (e *env) subscribe(query, token string) (*stream, int) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.hubURL+"?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	r, err := e.client.Do(req)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	if r.StatusCode != http.StatusOK {
		r.Body.Close()
		cancel()
		return nil, r.StatusCode
	}
	s := &stream{events: make(chan sse.Event, 64), raw: &strings.Builder{}, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(s.done)
		defer close(s.events)
		defer r.Body.Close()
		rd := sse.NewReader(bufio.NewReader(io.TeeReader(r.Body, writerFunc(func(p []byte) {
			s.mu.Lock()
			s.raw.Write(p)
			s.mu.Unlock()
		}))))
		for {
			ev, err := rd.Next()
			if err != nil {
				return
			}
			s.events <- ev
		}
	}()
	e.t.Cleanup(func() { cancel(); <-s.done })
	return s, http.StatusOK
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

// ended waits for the hub to end the stream and returns what it sent.
func (s *stream) ended(t *testing.T) string {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after 5s")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

func (s *stream) next(t *testing.T) sse.Event {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return sse.Event{}
}

// Only an admin token opens the admin API, unless it is open.
func TestAuthorization(t *testing.T) {
	run(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, h2, setup{})
		for _, c := range []struct {
			name, token string
			status      int
		}{
			{"no token", "", http.StatusUnauthorized},
			{"garbage", "x.y.z", http.StatusUnauthorized},
			{"subscriber key", e.mint(mercure.MintOptions{Key: e.subKey, Admin: true}), http.StatusUnauthorized},
			{"publisher without the grant", e.mint(mercure.MintOptions{Publish: []string{"*"}}), http.StatusForbidden},
			{"admin", e.adminToken(), http.StatusOK},
		} {
			if r := e.do(http.MethodGet, "/admin/nodes", c.token, ""); r.status != c.status {
				t.Errorf("%s: %d %s, want %d", c.name, r.status, r.body, c.status)
			}
		}
		open := newEnv(t, h2, setup{open: true})
		if r := open.do(http.MethodGet, "/admin/nodes", "", ""); r.status != http.StatusOK {
			t.Errorf("open (development mode), no token: %d", r.status)
		}
	})
}

// The node's figures: what it is, what it holds, what it does.
func TestNodes(t *testing.T) {
	run(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, h2, setup{open: true})
		s, _ := e.subscribe("match=https://example.com/a", e.mint(mercure.MintOptions{Key: e.subKey, Subscribe: []string{"*"}}))
		for range 3 {
			e.publish("https://example.com/a", "x")
		}
		for range 3 { // delivered, so counted as deliveries
			s.next(t)
		}
		r := e.do(http.MethodGet, "/admin/nodes", "", "")
		var got struct{ Nodes []admin.Node }
		if err := json.Unmarshal([]byte(r.body), &got); err != nil || len(got.Nodes) != 1 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		n := got.Nodes[0]
		if n.Name != "test-node" || n.Version != "v-test" || n.Subscribers != 1 || n.Connections != 7 || n.PublishesPerS <= 0 || n.DeliveriesPerS <= 0 {
			t.Fatalf("node %+v", n)
		}
		if len(n.Series.T) == 0 || len(n.Series.T) != len(n.Series.PublishesPerS) || len(n.Series.T) != len(n.Series.Subscribers) {
			t.Fatalf("series %+v", n.Series)
		}
	})
}

// Run samples every second and stops with its context.
func TestRunStops(t *testing.T) {
	eng := memory.New(memory.Options{})
	defer eng.Close()
	hb, _ := hub.New(hub.Config{Engine: eng})
	defer hb.Close()
	public, _ := url.Parse("http://127.0.0.1:1/.well-known/mercure")
	v, _ := mercure.NewValidator(mercure.TokenConfig{Draft7: true})
	mh, _ := mercure.New(mercure.Config{Hub: hb, Tokens: v, PublicURL: public, Draft7: true})
	adm, err := admin.New(admin.Config{Hub: hb, Mercure: mh, Tokens: v})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { adm.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// Topics lists the matchers subscribers hold, with their counts, in pages.
func TestTopics(t *testing.T) {
	run(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, h2, setup{})
		tok := e.mint(mercure.MintOptions{Key: e.subKey, Subscribe: []string{"*"}})
		e.subscribe("match=https://example.com/a", tok)
		e.subscribe("match=https://example.com/a", tok)
		e.subscribe("match_urlpattern="+url.QueryEscape("https://example.com/b/:id"), tok)
		e.subscribe("topic="+url.QueryEscape("https://example.com/c/{id}"), tok)
		adminTok := e.adminToken()
		var all []admin.Topic
		next := "/admin/topics?limit=2"
		for pages := 0; next != ""; pages++ {
			if pages > 3 {
				t.Fatal("more pages than topics")
			}
			r := e.do(http.MethodGet, next, adminTok, "")
			var got struct {
				Topics []admin.Topic
				Next   string
			}
			if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != http.StatusOK || len(got.Topics) > 2 {
				t.Fatalf("%s: %d %s", next, r.status, r.body)
			}
			all = append(all, got.Topics...)
			next = got.Next
		}
		want := []admin.Topic{
			{MatchType: "exact", Match: "https://example.com/a", Subscribers: 2},
			{MatchType: "urlpattern", Match: "https://example.com/b/:id", Subscribers: 1},
			{MatchType: "selector", Match: "https://example.com/c/{id}", Subscribers: 1},
		}
		if len(all) != len(want) {
			t.Fatalf("topics %+v, want %+v", all, want)
		}
		for i := range want {
			if all[i] != want[i] {
				t.Fatalf("topics %+v, want %+v", all, want)
			}
		}
	})
}

// History reads a topic's updates back, newest first, in pages.
func TestHistory(t *testing.T) {
	run(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, h2, setup{open: true})
		for i := range 5 {
			e.publish("https://example.com/t", "t"+string(rune('0'+i)))
			e.publish("https://example.com/u", "u"+string(rune('0'+i)))
		}
		var datas []string
		next := "/admin/history?limit=2&topic=" + url.QueryEscape("https://example.com/t")
		for pages := 0; next != ""; pages++ {
			if pages > 3 {
				t.Fatal("more pages than updates")
			}
			r := e.do(http.MethodGet, next, "", "")
			var got struct {
				Updates []admin.Update
				Next    string
			}
			if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != http.StatusOK {
				t.Fatalf("%s: %d %s", next, r.status, r.body)
			}
			for _, u := range got.Updates {
				datas = append(datas, u.Data)
			}
			next = got.Next
		}
		if strings.Join(datas, " ") != "t4 t3 t2 t1 t0" {
			t.Fatalf("history %v, want t4 … t0", datas)
		}
	})
}

// Disconnecting a token subject ends all its streams, with a reason, and
// its tokens issued until then stay out; a later token gets in.
func TestDisconnectSubject(t *testing.T) {
	run(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, h2, setup{subscriptions: true})
		ann := e.mint(mercure.MintOptions{Key: e.subKey, Subject: "ann", Subscribe: []string{"https://example.com/a"}})
		bob := e.mint(mercure.MintOptions{Key: e.subKey, Subject: "bob", Subscribe: []string{"https://example.com/a"}})
		s1, _ := e.subscribe("match=https://example.com/a", ann)
		s2, _ := e.subscribe("match=https://example.com/b", ann)
		other, _ := e.subscribe("match=https://example.com/a", bob)

		r := e.do(http.MethodPost, "/admin/disconnect", e.adminToken(), "sub=ann")
		if r.status != http.StatusOK || !strings.Contains(r.body, `"disconnected":2`) {
			t.Fatalf("disconnect: %d %s", r.status, r.body)
		}
		for _, s := range []*stream{s1, s2} {
			if out := s.ended(t); !strings.Contains(out, "disconnected by an administrator") {
				t.Fatalf("the stream ended without saying why: %q", out)
			}
		}
		if _, status := e.subscribe("match=https://example.com/a", ann); status != http.StatusUnauthorized {
			t.Fatalf("the revoked token subscribed again: %d", status)
		}
		later := e.mint(mercure.MintOptions{Key: e.subKey, Subject: "ann", Subscribe: []string{"https://example.com/a"}, Now: func() time.Time { return time.Now().Add(2 * time.Second) }})
		if _, status := e.subscribe("match=https://example.com/a", later); status != http.StatusOK {
			t.Fatalf("a token issued after the revocation: %d", status)
		}
		// Bob's stream is untouched: it gets the sentinel.
		e.publish("https://example.com/a", "sentinel")
		if ev := other.next(t); ev.Data != "sentinel" {
			t.Fatalf("bob got %+v", ev)
		}
	})
}

// Disconnecting one subscriber ends its stream alone; its end is
// announced at once, grace period or not; its token stays good.
func TestDisconnectSubscriber(t *testing.T) {
	run(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, h2, setup{subscriptions: true})
		watchTok := e.mint(mercure.MintOptions{Key: e.subKey, Subscribe: []string{"*"}})
		w, _ := e.subscribe("match_urlpattern="+url.QueryEscape("/.well-known/mercure/subscriptions/*"), watchTok)
		w.next(t) // its own
		ann := e.mint(mercure.MintOptions{Key: e.subKey, Subject: "ann", Subscribe: []string{"https://example.com/a"}})
		s, _ := e.subscribe("match=https://example.com/a", ann)
		var doc struct {
			Subscriber string
			Active     bool
		}
		_ = json.Unmarshal([]byte(w.next(t).Data), &doc)
		r := e.do(http.MethodPost, "/admin/disconnect", e.adminToken(), "subscriber="+url.QueryEscape(doc.Subscriber))
		if r.status != http.StatusOK {
			t.Fatalf("disconnect: %d %s", r.status, r.body)
		}
		s.ended(t)
		_ = json.Unmarshal([]byte(w.next(t).Data), &doc)
		if doc.Active {
			t.Fatal("the disconnected subscriber's end was not announced at once")
		}
		if _, status := e.subscribe("match=https://example.com/a", ann); status != http.StatusOK {
			t.Fatalf("its token no longer works: %d", status)
		}
	})
}

// Bad requests get a clear 4xx and change nothing.
func TestRefusals(t *testing.T) {
	run(t, func(t *testing.T, h2 bool) {
		e := newEnv(t, h2, setup{open: true})
		for _, c := range []struct {
			method, path, form string
			status             int
			says               string
		}{
			{http.MethodGet, "/admin/nope", "", http.StatusNotFound, "no such admin resource"},
			{http.MethodGet, "/admin/disconnect", "", http.StatusMethodNotAllowed, "POST"},
			{http.MethodPost, "/admin/topics", "x=1", http.StatusMethodNotAllowed, "GET"},
			{http.MethodPost, "/admin/disconnect", "", http.StatusBadRequest, "exactly one"},
			{http.MethodPost, "/admin/disconnect", "sub=a&subscriber=b", http.StatusBadRequest, "exactly one"},
			{http.MethodPost, "/admin/disconnect", "subscriber=urn:uuid:x", http.StatusBadRequest, "--subscriptions"},
			{http.MethodPost, "/admin/disconnect", "sub=" + strings.Repeat("x", 8<<10), http.StatusBadRequest, "malformed form"},
			{http.MethodGet, "/admin/topics?limit=100000", "", http.StatusBadRequest, "limit"},
			{http.MethodGet, "/admin/topics?limit=-1", "", http.StatusBadRequest, "limit"},
			{http.MethodGet, "/admin/history", "", http.StatusBadRequest, "missing topic"},
			{http.MethodGet, "/admin/history?topic=x&before=abc", "", http.StatusBadRequest, "before"},
			{http.MethodGet, "/admin/history?topic=x&limit=0", "", http.StatusBadRequest, "limit"},
		} {
			r := e.do(c.method, c.path, "", c.form)
			if r.status != c.status || !strings.Contains(r.body, c.says) {
				t.Errorf("%s %s %q: %d %q, want %d saying %q", c.method, c.path, c.form, r.status, r.body, c.status, c.says)
			}
		}
		withSubs := newEnv(t, h2, setup{open: true, subscriptions: true})
		if r := withSubs.do(http.MethodPost, "/admin/disconnect", "", "subscriber=urn:uuid:00000000-0000-4000-8000-000000000000"); r.status != http.StatusNotFound {
			t.Errorf("unknown subscriber: %d %s", r.status, r.body)
		}
	})
}
