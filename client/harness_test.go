package client_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-hub/herald/client"
	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mode is the HTTP version a test runs under.
type mode string

const (
	http1 mode = "h1"
	http2 mode = "h2"
)

// run runs f once per HTTP version, as net/http's own tests do.
func run(t *testing.T, f func(t *testing.T, m mode)) {
	for _, m := range []mode{http1, http2} {
		t.Run(string(m), func(t *testing.T) { f(t, m) })
	}
}

// startServer starts an httptest server for h under m: plain HTTP/1.1, or
// TLS with HTTP/2. It returns the server and an HTTP client over the
// package's own tuned transport that trusts the server. Every request's
// protocol major version is counted in protos.
func startServer(m mode, h http.Handler) (*httptest.Server, *http.Client, *protoCount) {
	pc := new(protoCount)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pc.add(r.ProtoMajor)
		h.ServeHTTP(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			pc.conns.Add(1)
		}
	}
	tr := client.NewTransport()
	if m == http2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
		tr.TLSClientConfig = &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	} else {
		srv.Start()
	}
	return srv, &http.Client{Transport: tr}, pc
}

// protoCount counts requests by HTTP major version, and connections.
type protoCount struct{ h1, h2, conns atomic.Int64 }

func (p *protoCount) add(major int) {
	if major == 2 {
		p.h2.Add(1)
	} else {
		p.h1.Add(1)
	}
}

// check fails t unless every request used m's protocol.
func (p *protoCount) check(t *testing.T, m mode) {
	t.Helper()
	h1, h2 := p.h1.Load(), p.h2.Load()
	if (m == http2 && (h1 != 0 || h2 == 0)) || (m == http1 && (h2 != 0 || h1 == 0)) {
		t.Errorf("mode %s: %d HTTP/1 and %d HTTP/2 requests", m, h1, h2)
	}
}

const (
	pubSecret = "publisher-secret-publisher-secret-0123"
	subSecret = "subscriber-secret-subscriber-secret-01"
)

// herald is a real herald hub (memory engine) on a loopback listener.
type herald struct {
	URL                             string
	PublisherToken, SubscriberToken string
	HTTPClient                      *http.Client
	protos                          *protoCount
	srv                             *httptest.Server
	hub                             *hub.Hub
	engine                          *memory.Engine
	pubKey, subKey                  *mercure.Key
	draft7                          bool
}

// startHerald starts a hub speaking only draft-07 (draft7) or only
// draft-08, so that a client using the other draft's forms fails.
func startHerald(m mode, draft7 bool) (*herald, error) {
	pk, err := mercure.ParseKey(pubSecret, nil)
	if err != nil {
		return nil, err
	}
	sk, err := mercure.ParseKey(subSecret, nil)
	if err != nil {
		return nil, err
	}
	h := &herald{pubKey: pk, subKey: sk, draft7: draft7, engine: memory.New(memory.Options{})}
	// The handler needs the URL, known once the server listens.
	var handler atomic.Pointer[mercure.Handler]
	h.srv, h.HTTPClient, h.protos = startServer(m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().ServeHTTP(w, r)
	}))
	h.URL = h.srv.URL + mercure.DefaultPath
	public, _ := url.Parse(h.URL)
	if h.hub, err = hub.New(hub.Config{Engine: h.engine, Heartbeat: -1}); err != nil {
		h.srv.Close()
		return nil, err
	}
	v, err := mercure.NewValidator(mercure.TokenConfig{
		PublisherKey: pk, SubscriberKey: sk, Issuer: "herald", Audience: h.URL,
		Draft7: draft7, Draft8: !draft7, Base: h.URL,
	})
	if err == nil {
		var mh *mercure.Handler
		mh, err = mercure.New(mercure.Config{Hub: h.hub, Tokens: v, PublicURL: public, Draft7: draft7, Draft8: !draft7})
		handler.Store(mh)
	}
	if err == nil {
		h.PublisherToken, err = h.token(mercure.ActionPublish, "*")
	}
	if err == nil {
		h.SubscriberToken, err = h.token(mercure.ActionSubscribe, "*")
	}
	if err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// newHerald starts a hub for a test and stops it when the test ends.
func newHerald(t *testing.T, m mode, draft7 bool) *herald {
	t.Helper()
	h, err := startHerald(m, draft7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// token mints a token of the hub's draft granting role on grants.
func (h *herald) token(role mercure.Action, grants ...string) (string, error) {
	o := mercure.MintOptions{TTL: time.Hour, Issuer: "herald", Audience: h.URL, Legacy: h.draft7}
	if role == mercure.ActionPublish {
		o.Key, o.Publish = h.pubKey, grants
	} else {
		o.Key, o.Subscribe = h.subKey, grants
	}
	return mercure.Mint(o)
}

// Config returns a client configuration for the hub.
func (h *herald) Config() client.Config {
	return client.Config{
		Hub: h.URL, PublisherToken: h.PublisherToken, SubscriberToken: h.SubscriberToken,
		Draft7: h.draft7, HTTPClient: h.HTTPClient, MinBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}
}

// Close stops the hub, its streams first (http.Server.Close would wait
// for them otherwise), and the client's idle connections.
func (h *herald) Close() {
	h.hub.EndStreams()
	h.srv.Close()
	h.hub.Close()
	_ = h.engine.Close()
	h.HTTPClient.CloseIdleConnections()
}

// fakeHub is an httptest server whose handler a test writes, recording
// the requests it got.
type fakeHub struct {
	srv    *httptest.Server
	client *http.Client
	protos *protoCount
	mu     sync.Mutex
	reqs   []*http.Request
}

// newFakeHub serves handle, which gets the 1-based request number.
func newFakeHub(t *testing.T, m mode, handle func(n int, w http.ResponseWriter, r *http.Request)) *fakeHub {
	t.Helper()
	f := &fakeHub{}
	f.srv, f.client, f.protos = startServer(m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			_ = r.ParseForm()
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.WithoutCancel(r.Context())))
		n := len(f.reqs)
		f.mu.Unlock()
		handle(n, w, r)
	}))
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.client.CloseIdleConnections()
	})
	return f
}

// requests returns the requests received so far.
func (f *fakeHub) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

// config returns a client configuration for the fake hub.
func (f *fakeHub) config() client.Config {
	return client.Config{Hub: f.srv.URL + "/.well-known/mercure", HTTPClient: f.client, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

// sseStart answers 200 with an event stream and flushes the headers.
func sseStart(w http.ResponseWriter, hdr map[string]string) {
	w.Header().Set("Content-Type", "text/event-stream")
	for k, v := range hdr {
		w.Header().Set(k, v)
	}
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
}

// sseWrite writes raw frames and flushes them.
func sseWrite(w http.ResponseWriter, frames string) {
	_, _ = io.WriteString(w, frames)
	_ = http.NewResponseController(w).Flush()
}

// frame encodes an event with an id and data.
func frame(id, data string) string { return fmt.Sprintf("id: %s\ndata: %s\n\n", id, data) }

// next returns the next event or fails after a deadline.
func next(t *testing.T, s *client.Subscription) client.Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("subscription ended: %v", s.Err())
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return client.Event{}
}

// ended waits for the subscription to end and returns Err.
func ended(t *testing.T, s *client.Subscription) error {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-s.Events():
			if !ok {
				return s.Err()
			}
		case <-deadline:
			t.Fatal("subscription still running after 10s")
			return nil
		}
	}
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// connects records OnConnect calls.
type connects struct {
	mu    sync.Mutex
	infos []client.ConnectInfo
}

func (c *connects) add(i client.ConnectInfo) {
	c.mu.Lock()
	c.infos = append(c.infos, i)
	c.mu.Unlock()
}

func (c *connects) get() []client.ConnectInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]client.ConnectInfo(nil), c.infos...)
}
