package bench

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
	"github.com/herald-hub/herald/server"
)

// newServedHerald starts an in-process herald wired as `herald serve`
// wires it (package server: herald_connections, and /metrics beside the
// hub with the Go collector and the hub's metrics), memory engine,
// anonymous subscribers, no heartbeats, a fast liveness probe. tune
// adjusts the hub's configuration; sndbuf > 0 sets the send buffer of
// every accepted connection, so that a stalled reader's backlog reaches
// the hub's queue after kilobytes rather than megabytes.
func newServedHerald(t *testing.T, tune func(*hub.Config), sndbuf int) (Config, *hub.Hub) {
	t.Helper()
	return newServedHeraldWith(t, servedHerald{tune: tune, sndbuf: sndbuf})
}

// servedHerald is how newServedHeraldWith wires its herald beyond
// newServedHerald's: listen wraps the listener (with the registry for its
// metrics), shed is the handler's shedding hook (mercure.Config.Shed),
// and process adds the process collector (process_open_fds, …).
type servedHerald struct {
	tune    func(*hub.Config)
	sndbuf  int
	listen  func(t *testing.T, ln net.Listener, reg prometheus.Registerer) net.Listener
	shed    func() string
	process bool
}

func newServedHeraldWith(t *testing.T, o servedHerald) (Config, *hub.Hub) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.sndbuf > 0 {
		ln = sndbufListener{ln, o.sndbuf}
	}
	hubURL := "http://" + ln.Addr().String() + mercure.DefaultPath
	public, _ := url.Parse(hubURL)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	if o.process {
		reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if o.listen != nil {
		ln = o.listen(t, ln, reg)
	}
	eng := memory.New(memory.Options{})
	hc := hub.Config{Engine: eng, Metrics: hub.NewMetrics(reg), Heartbeat: -1, Liveness: 100 * time.Millisecond}
	if o.tune != nil {
		o.tune(&hc)
	}
	h, err := hub.New(hc)
	if err != nil {
		t.Fatal(err)
	}
	key, err := mercure.ParseKey(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := mercure.NewValidator(mercure.TokenConfig{
		PublisherKey: key, SubscriberKey: key, Issuer: "herald", Audience: hubURL,
		Draft7: true, Draft8: true, Base: hubURL,
	})
	if err != nil {
		t.Fatal(err)
	}
	var srv *server.Server
	handler, err := mercure.New(mercure.Config{
		Hub: h, Tokens: v, PublicURL: public, Draft7: true, Draft8: true, Anonymous: true,
		HijackedClosed: func() { srv.HijackedClosed() },
		Shed:           o.shed,
		Registerer:     reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err = server.New(server.Config{Listener: ln, Handler: handler, Hub: h, Registry: reg, Streams: handler.Streams()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		_ = eng.Close()
	})
	tok, err := mercure.Mint(mercure.MintOptions{Key: key, Publish: []string{"*"}, TTL: time.Hour, Issuer: "herald", Audience: hubURL})
	if err != nil {
		t.Fatal(err)
	}
	return Config{Hub: hubURL, PublisherToken: tok}, h
}

type sndbufListener struct {
	net.Listener
	size int
}

func (l sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(l.size)
	}
	return c, err
}

// waitSubscribers waits up to 5s for the hub to count n subscribers: it
// notices a departed client at its next liveness probe.
func waitSubscribers(t *testing.T, h *hub.Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Subscribers() != n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := h.Subscribers(); got != n {
		t.Errorf("hub has %d subscribers, want %d", got, n)
	}
}

// table renders r as the default output does.
func table(t *testing.T, r *Result) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeTable(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestIdleHerald(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("samples /proc")
	}
	cfg, h := newServedHerald(t, nil, 0)
	// The hub shares this process with the subscribers: its RSS and
	// goroutines count both sides, which exercises the sampling, not
	// herald's figures.
	cfg.ServerPID = os.Getpid()
	cfg.Subscribers, cfg.Topics = 40, 2
	cfg.Duration, cfg.Settle = 1500*time.Millisecond, 5*time.Second
	r, obj := run(t, "idle", cfg)

	for _, k := range []string{"server_rss", "server_open_fds", "server_goroutines", "server_heap_inuse", "server_connections", "server_cpu_idle", "settled_after"} {
		if _, ok := r.Extra[k]; !ok {
			t.Errorf("Extra lacks %q: %v", k, r.Extra)
		}
	}
	conns, _ := r.Extra["server_connections"].(*serverFigure)
	if conns == nil || conns.During-conns.Before < 40 || conns.During-conns.Before > 42 || conns.After > conns.Before+2 {
		t.Errorf("herald_connections %+v, want 40 more while idle and back after", conns)
	}
	if g, _ := r.Extra["server_goroutines"].(*serverFigure); g == nil || g.PerConn < 1 {
		t.Errorf("goroutines %+v: the hub and the client share this process, at least one each per stream", g)
	}
	if fds, _ := r.Extra["server_open_fds"].(*serverFigure); fds == nil || fds.During-fds.Before < 80 {
		t.Errorf("open fds %+v: both ends of 40 connections are in this process", fds)
	}
	if cpu, _ := r.Extra["server_cpu_idle"].(*cpuFigure); cpu == nil || cpu.WindowS < 0.3 || cpu.Percent < 0 {
		t.Errorf("cpu %+v", cpu)
	}
	if r.Subscribers != 40 || r.ConnectErrors != 0 || r.Reconnects != 0 || r.DurationS < 1.4 {
		t.Errorf("subscribers %d, connect errors %d, reconnects %d, held %.2f s", r.Subscribers, r.ConnectErrors, r.Reconnects, r.DurationS)
	}
	waitSubscribers(t, h, 0)
	extra, _ := obj["extra"].(map[string]any)
	rss, _ := extra["server_rss"].(map[string]any)
	for _, k := range []string{"before", "during", "after", "per_conn"} {
		if _, ok := rss[k]; !ok {
			t.Errorf("JSON extra.server_rss lacks %q: %v", k, rss)
		}
	}
	if _, ok := obj["server_rss_per_conn_kb"]; !ok {
		t.Error("JSON lacks server_rss_per_conn_kb")
	}
	tab := table(t, r)
	for _, want := range []string{"server rss", "server goroutines", "per connection", "server cpu idle", "% of one core", "server connections"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	for _, unwanted := range []string{"latency", "lost"} {
		if strings.Contains(tab, unwanted) {
			t.Errorf("idle table shows %q:\n%s", unwanted, tab)
		}
	}
}

// Without --server-pid nor metrics, idle still holds the streams and says
// what it could not measure.
func TestIdleNoProbe(t *testing.T) {
	cfg, _ := newHerald(t, h1)
	cfg.MetricsURL = "off"
	cfg.Subscribers, cfg.Duration = 5, 300*time.Millisecond
	r, _ := run(t, "idle", cfg)
	if r.Subscribers != 5 || r.ConnectErrors != 0 || len(r.Extra) > 1 || !strings.Contains(strings.Join(r.Notes, "\n"), "no --server-pid") {
		t.Errorf("extra %v, notes %q", r.Extra, r.Notes)
	}
}
