package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/internal/testcert"
	"github.com/herald-hub/herald/mercure"
	"github.com/herald-hub/herald/server"
	"github.com/herald-hub/herald/sse"
	"github.com/herald-hub/herald/stream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type running struct {
	srv    *server.Server
	base   string
	hub    *hub.Hub
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	token  string
	client *http.Client
}

type opts struct {
	tls, h2c     bool
	h1           bool // with tls: the client speaks HTTP/1.1 only
	admin        bool
	writeTimeout time.Duration // the hub's; zero means its default
	// engine, when set, wraps the memory engine the hub runs on.
	engine func(*memory.Engine) hub.Engine
}

func start(t *testing.T, o opts) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "http"
	cfg := server.Config{Listener: ln, H2C: o.h2c, Registry: prometheus.NewRegistry()}
	if o.tls {
		scheme = "https"
		cfg.TLSCert, cfg.TLSKey = testcert.Write(t)
	}
	if o.admin {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	base := fmt.Sprintf("%s://%s", scheme, ln.Addr())
	public, _ := url.Parse(base + mercure.DefaultPath)
	eng := memory.New(memory.Options{})
	var he hub.Engine = eng
	if o.engine != nil {
		he = o.engine(eng)
	}
	h, err := hub.New(hub.Config{Engine: he, Metrics: hub.NewMetrics(cfg.Registry), WriteTimeout: o.writeTimeout})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := mercure.ParseKey("a-secret-key-of-thirty-two-bytes!!", nil)
	v, err := mercure.NewValidator(mercure.TokenConfig{PublisherKey: key, SubscriberKey: key, Issuer: "herald", Audience: public.String(), Draft7: true, Draft8: true, Base: public.String()})
	if err != nil {
		t.Fatal(err)
	}
	streams := new(stream.Tracker)
	handler, err := mercure.New(mercure.Config{Hub: h, Tokens: v, PublicURL: public, Draft7: true, Draft8: true, Anonymous: true, Streams: streams})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Handler, cfg.Hub, cfg.Streams = handler, h, streams
	cfg.ShutdownTimeout = 5 * time.Second
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mercure.Mint(mercure.MintOptions{Key: key, Publish: []string{"*"}, TTL: time.Hour, Issuer: "herald", Audience: public.String()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, base: base, hub: h, reg: cfg.Registry, cancel: cancel, done: make(chan error, 1), token: tok}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // self-signed test certificate
	var protos http.Protocols
	protos.SetHTTP1(!o.h2c)
	protos.SetHTTP2(o.tls && !o.h1)
	protos.SetUnencryptedHTTP2(o.h2c)
	tr.Protocols = &protos
	tr.ForceAttemptHTTP2 = o.tls && !o.h1
	r.client = &http.Client{Transport: tr}
	go func() { r.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		r.stop(t)
		tr.CloseIdleConnections()
		_ = eng.Close()
	})
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		close(r.done)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not stop")
	}
}

func (r *running) get(t *testing.T, path string) (int, string, *http.Response) {
	t.Helper()
	resp, err := r.client.Get(r.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func (r *running) publish(t *testing.T, topic string) {
	t.Helper()
	r.post(t, url.Values{"topic": {topic}})
}

// post publishes form with the publisher token and requires a 200.
func (r *running) post(t *testing.T, form url.Values) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.base+mercure.DefaultPath, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
}
func TestProtocols(t *testing.T) {
	for name, o := range map[string]opts{"http1": {}, "tls-h2": {tls: true}, "h2c": {h2c: true}} {
		t.Run(name, func(t *testing.T) {
			r := start(t, o)
			code, _, resp := r.get(t, "/healthz")
			if code != 200 {
				t.Fatalf("healthz %d", code)
			}
			want := 1
			if o.tls || o.h2c {
				want = 2
			}
			if resp.ProtoMajor != want {
				t.Fatalf("served HTTP/%d, want HTTP/%d", resp.ProtoMajor, want)
			}
		})
	}
}

func TestHealthReadinessMetrics(t *testing.T) {
	r := start(t, opts{admin: true})
	if code, body, _ := r.get(t, "/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("readyz %d %q", code, body)
	}
	r.publish(t, "a")
	// With an admin listener, metrics are served there only.
	if code, _, _ := r.get(t, "/metrics"); code != 404 {
		t.Errorf("metrics on the public listener: %d", code)
	}
	mresp, err := http.Get("http://" + r.srv.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	code, body := mresp.StatusCode, string(mb)
	if code != 200 {
		t.Fatalf("metrics %d", code)
	}
	for _, m := range []string{"herald_connections", "herald_subscribers", "herald_updates_published_total 1",
		"herald_deliveries_total", "herald_slow_subscriber_disconnects_total", "herald_queue_bytes",
		"herald_publish_duration_seconds_bucket", "herald_history_updates 1", "herald_write_delay_seconds 0"} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q", m)
		}
	}
	// pprof only on the admin address.
	if code, _, _ := r.get(t, "/debug/pprof/"); code != 404 {
		t.Errorf("pprof on the public listener: %d", code)
	}
	resp, err := http.Get("http://" + r.srv.AdminAddr().String() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("admin pprof: %d", resp.StatusCode)
	}
}

// TestGracefulShutdown: streams end so clients reconnect, readiness turns
// false, and the server stops well within its grace period.
func TestGracefulShutdown(t *testing.T) {
	for name, o := range map[string]opts{"http1": {}, "tls-h2": {tls: true}} {
		t.Run(name, func(t *testing.T) {
			r := start(t, o)
			resp, err := r.client.Get(r.base + mercure.DefaultPath + "?match=a")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			r.publish(t, "a")
			br := bufio.NewReader(resp.Body)
			if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "id: ") {
				t.Fatalf("first line %q", line)
			}
			begin := time.Now()
			r.cancel()
			// The stream must end (EOF), with the closing comment.
			rest, _ := io.ReadAll(br)
			if !strings.Contains(string(rest), "closed: hub shutting down") {
				t.Errorf("stream ended without saying why: %q", rest)
			}
			select {
			case err := <-r.done:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
				r.done <- nil
			case <-time.After(5 * time.Second):
				t.Fatal("server did not stop")
			}
			if d := time.Since(begin); d > 3*time.Second {
				t.Errorf("shutdown took %v with one idle stream", d)
			}
		})
	}
}

// TestShutdownFinishesPublishes starts shutdown while a publish body is
// still being sent: the publish completes with 200.
func TestShutdownFinishesPublishes(t *testing.T) {
	r := start(t, opts{})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, r.base+mercure.DefaultPath, pr)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+r.token)
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := r.client.Do(req)
		if err != nil {
			res <- result{0, err}
			return
		}
		resp.Body.Close()
		res <- result{resp.StatusCode, nil}
	}()
	_, _ = pw.Write([]byte("topic=a&data="))
	waitFor(t, func() bool { return r.hub != nil }) // request in flight
	time.Sleep(50 * time.Millisecond)
	r.cancel()
	time.Sleep(50 * time.Millisecond)
	_, _ = pw.Write([]byte("late"))
	pw.Close()
	got := <-res
	if got.err != nil || got.code != 200 {
		t.Fatalf("in-flight publish: %d %v", got.code, got.err)
	}
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	r.done <- nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRouting: Mercure requests go straight to the Mercure handler, health
// and metrics to the mux, and paths that are not clean still get the mux's
// redirect to their clean form.
func TestRouting(t *testing.T) {
	r := start(t, opts{})
	r.publish(t, "a") // through the direct route
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for path, want := range map[string]int{
		"/healthz":                  200,
		"/readyz":                   200,
		"/metrics":                  200,
		"/elsewhere":                404,
		"//.well-known/mercure":     307,
		"/./.well-known/mercure":    307,
		"/x/../.well-known/mercure": 307,
		"/.well-known/mercure/.":    307,
		"/.well-known/oauth-protected-resource/.well-known/mercure": 200,
	} {
		resp, err := noFollow.Get(r.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// publishData publishes an update with data on topic.
func (r *running) publishData(t *testing.T, topic, data string) {
	t.Helper()
	r.post(t, url.Values{"topic": {topic}, "data": {data}})
}

// queuedBytes reads the herald_queue_bytes gauge.
func (r *running) queuedBytes(t *testing.T) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "herald_queue_bytes" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no herald_queue_bytes metric")
	return 0
}

// subscribeLive opens a stream on topic and waits until it is live: an
// update published after it arrives on it.
func (r *running) subscribeLive(t *testing.T, topic string) (*http.Response, *bufio.Reader) {
	t.Helper()
	resp, err := r.client.Get(r.base + mercure.DefaultPath + "?match=" + url.QueryEscape(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("subscribe: %d", resp.StatusCode)
	}
	return resp, bufio.NewReader(resp.Body)
}

// served waits for Serve to return and reports its error.
func (r *running) served(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- nil
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
	return nil
}

// TestShutdownWithStalledReader: a client that stopped reading, with far
// more queued for it than the socket buffers and HTTP/2 flow control
// hold, does not hold the shutdown past its grace period, although the
// hub's write timeout is a minute: once shutdown starts, every stream's
// writes are bounded by stream.CloseTimeout, the closing words included.
func TestShutdownWithStalledReader(t *testing.T) {
	for name, o := range map[string]opts{
		"http1":  {writeTimeout: time.Minute},
		"tls-h1": {tls: true, h1: true, writeTimeout: time.Minute}, // taken over, over TLS
		"tls-h2": {tls: true, writeTimeout: time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			r := start(t, o)
			_, br := r.subscribeLive(t, "a")
			r.publish(t, "a")
			if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "id: ") {
				t.Fatalf("first line %q", line)
			}
			// The client reads no more. Once a megabyte waits in the
			// queue, the stream's writer is stuck on it.
			data := strings.Repeat("x", 64<<10)
			for i := 0; r.queuedBytes(t) < 1<<20; i++ {
				if i > 1000 {
					t.Fatal("the queue does not grow: the client is still reading")
				}
				r.publishData(t, "a", data)
			}
			r.cancel()
			if err := r.served(t); err != nil {
				t.Fatalf("shutdown held by a stalled reader: %v", err)
			}
		})
	}
}

// TestShutdownSpreadsReconnects: every stream ended by a shutdown is told,
// after why, to come back after a delay drawn from 1-5s, so its clients do
// not all come back in the same instant.
func TestShutdownSpreadsReconnects(t *testing.T) {
	for name, o := range map[string]opts{"http1": {}, "tls-h2": {tls: true}} {
		t.Run(name, func(t *testing.T) {
			r := start(t, o)
			const n = 16
			readers := make([]*bufio.Reader, n)
			for i := range readers {
				_, readers[i] = r.subscribeLive(t, "a")
			}
			r.publish(t, "a")
			for _, br := range readers {
				if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "id: ") {
					t.Fatalf("first line %q", line)
				}
			}
			r.cancel()
			seen := make(map[int]bool)
			for _, br := range readers {
				rest, _ := io.ReadAll(br)
				if !strings.Contains(string(rest), ": closed: hub shutting down\n") {
					t.Fatalf("stream ended without saying why: %q", rest)
				}
				retry := retryOf(t, rest)
				if retry < 1000 || retry > 5000 {
					t.Fatalf("retry %d ms is outside 1000-5000", retry)
				}
				seen[retry] = true
			}
			if len(seen) < 2 {
				t.Fatalf("%d streams were all told the same retry: %v", n, seen)
			}
			if err := r.served(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// retryOf returns the reconnection time a stream's tail sets.
func retryOf(t *testing.T, tail []byte) int {
	t.Helper()
	rd := sse.NewReader(bytes.NewReader(tail))
	for {
		if _, err := rd.Next(); err != nil {
			break
		}
	}
	v, err := strconv.Atoi(rd.Retry())
	if err != nil {
		t.Fatalf("no retry in %q", tail)
	}
	return v
}

// sickEngine reports the health it is given (hub.Health).
type sickEngine struct {
	*memory.Engine
	err atomic.Pointer[error]
}

func (e *sickEngine) Healthy() error {
	if p := e.err.Load(); p != nil {
		return *p
	}
	return nil
}

// TestReadinessFollowsTheHistory: /readyz answers 503 with the engine's
// reason while its history cannot take appends (a bolt history stopped
// after a write failure), and ready again once it can.
func TestReadinessFollowsTheHistory(t *testing.T) {
	var sick *sickEngine
	r := start(t, opts{engine: func(m *memory.Engine) hub.Engine {
		sick = &sickEngine{Engine: m}
		return sick
	}})
	if code, body, _ := r.get(t, "/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("readyz %d %q", code, body)
	}
	stopped := errors.New("history stopped after a write failure; restart herald")
	sick.err.Store(&stopped)
	if code, body, _ := r.get(t, "/readyz"); code != 503 || !strings.Contains(body, "history stopped") {
		t.Fatalf("readyz with a stopped history: %d %q", code, body)
	}
	if code, _, _ := r.get(t, "/healthz"); code != 200 {
		t.Fatalf("healthz %d: the process is alive", code)
	}
	sick.err.Store(nil)
	if code, _, _ := r.get(t, "/readyz"); code != 200 {
		t.Fatalf("readyz %d after the history recovered", code)
	}
}
