package mercure_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

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

type options struct {
	draft7, draft8 bool
	anonymous      bool
	cors           []string
	maxLifetime    time.Duration
	heartbeat      time.Duration // hub heartbeat; zero means off
	writeTimeout   time.Duration
	path           string // hub path; default the well-known one
	tune           func(*mercure.Config)
	tracer         trace.Tracer // for the hub and the handler both
	retention      hub.Retention
}

func defaults() options { return options{draft7: true, draft8: true} }

// testHub is a herald hub on a real loopback listener.
type testHub struct {
	t      *testing.T
	srv    *httptest.Server
	url    string // hub URL
	client *http.Client
	engine *memory.Engine
	hub    *hub.Hub
	h      *mercure.Handler
	pubKey *mercure.Key
	subKey *mercure.Key
}

func newHub(t *testing.T, m mode, o options) *testHub {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	scheme := "http"
	if m == http2 {
		scheme = "https"
	}
	path := o.path
	if path == "" {
		path = mercure.DefaultPath
	}
	hubURL := fmt.Sprintf("%s://%s%s", scheme, srv.Listener.Addr(), path)
	public, _ := url.Parse(hubURL)
	eng := memory.New(memory.Options{Retention: o.retention})
	heartbeat := o.heartbeat
	if heartbeat == 0 {
		heartbeat = -1
	}
	h, err := hub.New(hub.Config{Engine: eng, Heartbeat: heartbeat, WriteTimeout: o.writeTimeout, Tracer: o.tracer})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := mercure.ParseKey(pubSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := mercure.ParseKey(subSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := mercure.NewValidator(mercure.TokenConfig{
		PublisherKey: pk, SubscriberKey: sk, Issuer: "herald", Audience: hubURL,
		Draft7: o.draft7, Draft8: o.draft8, Base: hubURL,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mercure.Config{
		Hub: h, Tokens: v, PublicURL: public, Draft7: o.draft7, Draft8: o.draft8,
		Anonymous: o.anonymous, CORSOrigins: o.cors, MaxLifetime: o.maxLifetime,
		MaxBodyBytes: 64 << 10, MaxTopics: 8, MaxMatchers: 8, MaxFieldBytes: 512,
		Tracer: o.tracer,
	}
	if o.tune != nil {
		o.tune(&cfg)
	}
	handler, err := mercure.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = handler
	if m == http2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	th := &testHub{t: t, srv: srv, url: hubURL, client: srv.Client(), engine: eng, hub: h, h: handler, pubKey: pk, subKey: sk}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := handler.Streams().Shutdown(ctx, h.EndStreams); err != nil {
			t.Errorf("streams still running: %v", err)
		}
		srv.Close()
		handler.Streams().Wait()
		handler.Close(ctx)
		h.Close()
		_ = eng.Close()
	})
	return th
}

// token mints a token with the hub's key for the role.
func (th *testHub) token(role mercure.Action, legacy bool, grants ...string) string {
	th.t.Helper()
	return th.tokenFor("", role, legacy, grants...)
}

// tokenFor mints a token for the subject sub (empty: Mint's default).
func (th *testHub) tokenFor(sub string, role mercure.Action, legacy bool, grants ...string) string {
	th.t.Helper()
	o := mercure.MintOptions{TTL: time.Hour, Issuer: "herald", Audience: th.url, Legacy: legacy, Subject: sub}
	if role == mercure.ActionPublish {
		o.Key, o.Publish = th.pubKey, grants
	} else {
		o.Key, o.Subscribe = th.subKey, grants
	}
	tok, err := mercure.Mint(o)
	if err != nil {
		th.t.Fatal(err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   string
}

// send sends a request, a form body when body is not empty.
func (th *testHub) send(ctx context.Context, method, target, body string, hdr map[string]string) *http.Response {
	th.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		th.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := th.client.Do(req)
	if err != nil {
		th.t.Fatal(err)
	}
	return resp
}

// do sends a request and reads the whole response.
func (th *testHub) do(method, target string, body string, hdr map[string]string) response {
	th.t.Helper()
	resp := th.send(context.Background(), method, target, body, hdr)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b)}
}

// publish posts a form with a publisher token granting every topic.
func (th *testHub) publish(form string) response {
	th.t.Helper()
	return th.do(http.MethodPost, th.url, form, map[string]string{
		"Authorization": "Bearer " + th.token(mercure.ActionPublish, false, "*"),
	})
}

func (th *testHub) mustPublish(form string) string {
	th.t.Helper()
	r := th.publish(form)
	if r.status != http.StatusOK {
		th.t.Fatalf("publish %q: %d %s", form, r.status, r.body)
	}
	return r.body
}

// stream is an open subscription read in the background.
type stream struct {
	resp   *http.Response
	events chan sse.Event
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

// subscribe opens a stream; it fails the test unless the status is 200.
func (th *testHub) subscribe(query string, hdr map[string]string) *stream {
	th.t.Helper()
	s, r := th.trySubscribe(http.MethodGet, query, "", hdr)
	if s == nil {
		th.t.Fatalf("subscribe %q: %d %s", query, r.status, r.body)
	}
	return s
}

func (th *testHub) trySubscribe(method, query, body string, hdr map[string]string) (*stream, response) {
	th.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	th.t.Cleanup(cancel)
	resp := th.send(ctx, method, th.url+"?"+query, body, hdr)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, response{resp.StatusCode, resp.Header, string(b)}
	}
	s := &stream{resp: resp, events: make(chan sse.Event, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.events)
		r := sse.NewReader(bufio.NewReader(resp.Body))
		for {
			ev, err := r.Next()
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			s.events <- ev
		}
	}()
	th.t.Cleanup(s.close)
	return s, response{resp.StatusCode, resp.Header, ""}
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
	<-s.done
}

// next returns the next event or fails after a deadline.
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

// ids reads n events and returns their ids.
func (s *stream) ids(t *testing.T, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = s.next(t).ID
	}
	return out
}

// ended waits for the server to close the stream.
func (s *stream) ended(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(within):
		t.Fatalf("stream still open after %v", within)
	}
}

var _ = tls.VersionTLS12

func b64(s string) string {
	return strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(s)), "=")
}
