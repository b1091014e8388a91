package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-hub/herald/client"
)

// churnMaxLife bounds how long a churn subscriber stays: each lives a
// random time in [0, churnMaxLife).
const churnMaxLife = 2 * time.Second

// churnConnectTimeout bounds one churn subscriber's connection.
const churnConnectTimeout = 10 * time.Second

func init() {
	Register(Scenario{
		Name:    "churn",
		Summary: "subscribers come and go at --churn-rate for --duration (half reset the socket): do the hub's goroutines, heap, RSS and connections return to baseline, and when (--server-pid, /metrics)",
		Defaults: func(c *Config) {
			setDefault(&c.ChurnRate, 100)
			setDefault(&c.Settle, 60*time.Second)
		},
		Budget: func(c *Config) time.Duration {
			return c.Duration + churnMaxLife + churnConnectTimeout + c.Settle + 60*time.Second
		},
		Run: runChurn,
	})
}

// runChurn samples the server (the baseline), then starts Cfg.ChurnRate
// subscribers a second for Cfg.Duration, each living a random time under
// churnMaxLife: the even ones leave cleanly through the client (Close,
// which closes the connection: FIN), the odd ones are raw connections
// reset with SO_LINGER 0 (RST), as a client that vanishes. Once all are
// gone it samples the server every 500ms for up to Cfg.Settle, until
// every figure is back near its baseline.
//
// Churn speaks HTTP/1.1: under HTTP/2 a dropped socket would drop every
// stream multiplexed on it, not one subscriber.
func runChurn(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	if cfg.HTTP2 {
		return nil, errors.New("churn speaks HTTP/1.1 only: one connection per subscriber, so that dropping a socket drops one subscriber")
	}
	total := int(math.Round(cfg.ChurnRate * cfg.Duration.Seconds()))
	if total < 1 {
		return nil, fmt.Errorf("--churn-rate %g over --duration %s makes no connection", cfg.ChurnRate, cfg.Duration)
	}
	probe, err := e.newServerProbe(ctx)
	if err != nil {
		return nil, err
	}
	defer probe.close()
	if !probe.ok() {
		return nil, errors.New("churn watches the server: give --server-pid, or a hub that serves /metrics (--metrics-url)")
	}
	r := &Result{Topics: cfg.Topics, Extra: map[string]any{}}
	r.Notes = append(r.Notes, probe.notes...)

	baseline, err := probe.sample(ctx)
	if err != nil {
		return nil, fmt.Errorf("sample the server before: %w", err)
	}

	var st churnStats
	st.Rate, st.MaxLifeS = cfg.ChurnRate, churnMaxLife.Seconds()
	mon := e.StartMonitor("churn", func() Counters {
		return Counters{Open: st.open.Load()}
	})
	defer mon.Stop()

	// Sample during the churn too, for the peaks.
	var peaks serverPeaks
	samplerDone := make(chan struct{})
	stopSampler := make(chan struct{})
	go func() { // ends at stopSampler, closed below
		defer close(samplerDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopSampler:
				return
			case <-t.C:
				if s, err := probe.sample(ctx); err == nil {
					peaks.see(s)
				}
			}
		}
	}()

	mon.SetPhase("churning")
	topics := e.Topics("churn", cfg.Topics)
	lat := newRecorder()
	capacity := 10_000
	if e.FDLimit > 0 {
		capacity = max(int(e.FDLimit)-fdReserve, 16)
	}
	sem := make(chan struct{}, capacity)
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / cfg.ChurnRate)
	tick := time.NewTimer(0)
	<-tick.C
loop:
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			tick.Reset(d)
			select {
			case <-ctx.Done():
				break loop
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		default:
			st.Skipped.Add(1)
			continue
		}
		st.Attempted.Add(1)
		wg.Go(func() {
			defer func() { <-sem }()
			churnOne(ctx, e, &st, lat, i, topics[i%len(topics)])
		})
	}
	tick.Stop()
	st.StartingS = time.Since(start).Seconds()
	wg.Wait()
	churnEnd := time.Now()
	close(stopSampler)
	<-samplerDone
	r.DurationS = churnEnd.Sub(start).Seconds()
	r.Subscribers = int(st.Attempted.Load())
	r.ConnectErrors = st.ConnectErrors.Load()
	r.Reconnects = st.Reconnects.Load()
	r.Extra["churn"] = &st
	if h := lat.merged(); h.TotalCount() > 0 {
		r.Extra["connect_latency"] = latencyFigure(percentiles(h))
	}
	if st.Skipped.Load() > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d connections skipped: %d were open, the open-files limit allows no more", st.Skipped.Load(), capacity))
	}
	if st.firstErr.Load() != nil {
		r.Notes = append(r.Notes, "first connection error: "+*st.firstErr.Load())
	}

	// Settle: watch every figure come back.
	mon.SetPhase("settling")
	figs := settleFigures(baseline)
	end, err := probe.sample(ctx)
	if err != nil {
		r.Timeline = mon.Stop()
		return r, fmt.Errorf("sample the server after the churn: %w", err)
	}
	peaks.see(end)
	deadline := churnEnd.Add(cfg.Settle)
	var sampleErr error
	for s := end; ; {
		allBack := true
		for _, f := range figs {
			if !f.see(s, churnEnd) {
				allBack = false
			}
		}
		if allBack || ctx.Err() != nil {
			break
		}
		next := time.Now().Add(500 * time.Millisecond)
		if next.After(deadline) || !sleepUntil(ctx, next) {
			break
		}
		ns, err := probe.sample(ctx)
		if err != nil {
			sampleErr = err
			continue
		}
		s = ns
	}
	r.Timeline = mon.Stop()
	r.Extra["watched_after"] = seconds(time.Since(churnEnd).Seconds())
	var notBack []string
	for _, f := range figs {
		f.End, f.Peak = f.get(end), max(f.get(end), peaks.get(f.key))
		r.Extra[f.key] = f
		if !f.Returned {
			notBack = append(notBack, strings.TrimPrefix(f.key, "server_"))
		}
	}
	if len(notBack) > 0 && ctx.Err() == nil {
		r.Notes = append(r.Notes, fmt.Sprintf("not back to baseline within %s: %s", cfg.Settle, strings.Join(notBack, ", ")))
	}
	if sampleErr != nil {
		r.Notes = append(r.Notes, "a server sample failed: "+sampleErr.Error())
	}
	return r, ctx.Err()
}

// churnOne is subscriber i of the churn: connect, stay, leave.
func churnOne(ctx context.Context, e *Env, st *churnStats, lat *recorder, i int, topic string) {
	life := rand.N(churnMaxLife)
	cctx, cancel := context.WithTimeout(ctx, churnConnectTimeout)
	defer cancel()
	t0 := time.Now()
	// stay holds an open subscription for its life, then leaves with
	// leave and counts how it left.
	stay := func(leave func(), how *atomic.Int64) {
		lat.record(i, time.Since(t0))
		st.opened()
		sleepFor(ctx, life)
		leave()
		st.open.Add(-1)
		how.Add(1)
	}
	if i%2 == 0 {
		// Clean: the client, closed by its owner.
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		stop := context.AfterFunc(cctx, func() {
			if cctx.Err() == context.DeadlineExceeded {
				scancel()
			}
		})
		sub, err := e.subs.Subscribe(sctx, client.SubscribeOptions{
			Topics: []string{topic},
			OnConnect: func(ci client.ConnectInfo) {
				if ci.Attempt > 1 {
					st.Reconnects.Add(1)
				}
			},
		})
		stop()
		if err != nil {
			st.connectErr(ctx, err)
			return
		}
		stay(sub.Close, &st.Clean)
		return
	}
	// Abrupt: a raw connection, reset.
	rc, err := e.rawSubscribe(cctx, topic, nil)
	if err != nil {
		st.connectErr(ctx, err)
		return
	}
	stay(rc.reset, &st.Reset)
}

func sleepFor(ctx context.Context, d time.Duration) bool {
	return sleepUntil(ctx, time.Now().Add(d))
}

// churnStats counts the churn; it is also its summary in Result.Extra.
type churnStats struct {
	Rate      float64 `json:"rate"`
	MaxLifeS  float64 `json:"max_life_s"`
	StartingS float64 `json:"starting_s"` // from the first start to the last
	Attempted atomic.Int64
	Connected atomic.Int64
	// Clean left through the client's Close (FIN); Reset dropped the
	// socket with SO_LINGER 0 (RST).
	Clean, Reset  atomic.Int64
	ConnectErrors atomic.Int64
	Reconnects    atomic.Int64 // clean subscribers the hub cut during their life
	Skipped       atomic.Int64 // not started: the open-files limit
	PeakOpen      atomic.Int64

	open     atomic.Int64
	firstErr atomic.Pointer[string]
}

func (s *churnStats) opened() {
	s.Connected.Add(1)
	n := s.open.Add(1)
	for {
		p := s.PeakOpen.Load()
		if n <= p || s.PeakOpen.CompareAndSwap(p, n) {
			return
		}
	}
}

func (s *churnStats) connectErr(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // interrupted, not failed
	}
	s.ConnectErrors.Add(1)
	msg := err.Error()
	s.firstErr.CompareAndSwap(nil, &msg)
}

func (s *churnStats) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `{"rate":%g,"max_life_s":%g,"starting_s":%.3f,"attempted":%d,"connected":%d,"clean":%d,"reset":%d,"connect_errors":%d,"reconnects":%d,"skipped":%d,"peak_open":%d}`,
		s.Rate, s.MaxLifeS, s.StartingS, s.Attempted.Load(), s.Connected.Load(), s.Clean.Load(), s.Reset.Load(),
		s.ConnectErrors.Load(), s.Reconnects.Load(), s.Skipped.Load(), s.PeakOpen.Load()), nil
}

func (s *churnStats) String() string {
	return fmt.Sprintf("%s connections at %s/s over %.1f s, each staying 0–%.0f s: %s closed cleanly, %s reset (SO_LINGER 0); at most %s open at once",
		num(float64(s.Connected.Load())), num(s.Rate), s.StartingS, s.MaxLifeS, num(float64(s.Clean.Load())), num(float64(s.Reset.Load())), num(float64(s.PeakOpen.Load())))
}

// latencyFigure is a latency summary in Result.Extra.
type latencyFigure Percentiles

func (l latencyFigure) String() string { return pcts(Percentiles(l)) }

// settleFigure follows one server figure back to its baseline after a
// churn.
type settleFigure struct {
	key  string
	get  func(serverSample) float64
	ok   func(v float64) bool
	Unit string `json:"unit"` // bytes or count
	// Source says where the figure comes from (a metric, /proc).
	Source   string  `json:"source"`
	Baseline float64 `json:"baseline"`
	Peak     float64 `json:"peak"` // highest sampled, during the churn or at its end
	End      float64 `json:"end"`  // when the last subscriber left
	Final    float64 `json:"final"`
	Bound    float64 `json:"bound"` // back means at most this
	Returned bool    `json:"returned"`
	// AfterS is when it came back (and stayed), in seconds after the
	// last subscriber left; -1 if it did not.
	AfterS float64 `json:"after_s"`

	since time.Time // start of the current run of samples within bound
}

// newSettleFigure follows the figure get reads from the samples back to
// at most bound.
func newSettleFigure(key, unit, source string, get func(serverSample) float64, baseline serverSample, bound float64) *settleFigure {
	return &settleFigure{key: key, get: get, ok: func(v float64) bool { return v >= 0 && v <= bound },
		Unit: unit, Source: source, Baseline: get(baseline), Bound: bound, AfterS: -1}
}

// see takes one sample and reports whether the figure is back.
func (f *settleFigure) see(s serverSample, end time.Time) bool {
	v := f.get(s)
	f.Final = v
	if !f.ok(v) {
		f.since, f.Returned, f.AfterS = time.Time{}, false, -1
		return false
	}
	if f.since.IsZero() {
		f.since = s.At
	}
	f.Returned, f.AfterS = true, round2(max(f.since.Sub(end).Seconds(), 0))
	return true
}

func (f *settleFigure) String() string {
	v := countStr
	if f.Unit == "bytes" {
		v = bytesStr
	}
	verdict := fmt.Sprintf("returned after %.1f s", f.AfterS)
	if !f.Returned {
		verdict = "NOT returned"
	}
	return fmt.Sprintf("%s: baseline %s, peak %s, end %s, now %s (back means ≤ %s; %s)",
		verdict, v(f.Baseline), v(f.Peak), v(f.End), v(f.Final), v(f.Bound), f.Source)
}

// settleFigures are the figures churn follows, those baseline knows:
// goroutines (≤ baseline+5), heap in use and RSS (≤ 1.5× baseline),
// connections, from herald_connections or else open fds (≤ baseline+2),
// and herald_subscribers (≤ baseline).
func settleFigures(b serverSample) []*settleFigure {
	var out []*settleFigure
	add := func(key, unit, source string, get func(serverSample) float64, bound float64) {
		out = append(out, newSettleFigure(key, unit, source, get, b, bound))
	}
	if b.Goroutines >= 0 {
		add("server_goroutines", "count", "go_goroutines", func(s serverSample) float64 { return float64(s.Goroutines) }, float64(b.Goroutines+5))
	}
	if b.HeapBytes > 0 {
		add("server_heap_inuse", "bytes", "go_memstats_heap_inuse_bytes", func(s serverSample) float64 { return float64(s.HeapBytes) }, 1.5*float64(b.HeapBytes))
	}
	if b.RSSBytes > 0 {
		add("server_rss", "bytes", "/proc VmRSS", func(s serverSample) float64 { return float64(s.RSSBytes) }, 1.5*float64(b.RSSBytes))
	}
	switch {
	case b.Connections >= 0:
		add("server_connections", "count", "herald_connections", func(s serverSample) float64 { return float64(s.Connections) }, float64(b.Connections+2))
	case b.OpenFDs > 0:
		add("server_open_fds", "count", "/proc fd", func(s serverSample) float64 { return float64(s.OpenFDs) }, float64(b.OpenFDs+2))
	}
	if b.Subscribers >= 0 {
		add("server_subscribers", "count", "herald_subscribers", func(s serverSample) float64 { return float64(s.Subscribers) }, float64(b.Subscribers))
	}
	return out
}

// serverPeaks keeps the highest of each figure sampled: those figs gives,
// settleFigures when nil.
type serverPeaks struct {
	figs func(serverSample) []*settleFigure

	mu sync.Mutex
	m  map[string]float64
}

func (p *serverPeaks) see(s serverSample) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]float64{}
	}
	figs := p.figs
	if figs == nil {
		figs = settleFigures
	}
	for _, f := range figs(s) {
		p.m[f.key] = max(p.m[f.key], f.Baseline)
	}
}

func (p *serverPeaks) get(key string) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[key]
}

// rawConn is a subscription on a connection of its own, opened without
// the client package so that the scenario owns the socket: churn resets
// it, slow leaves it unread. It speaks HTTP/1.1, over TLS for https hubs.
type rawConn struct {
	tcp  *net.TCPConn
	nc   net.Conn // tcp, or TLS over it
	resp *http.Response

	// While draining, every read waits at most quiet for data.
	draining atomic.Bool
	quiet    atomic.Int64 // nanoseconds
	read     atomic.Int64 // bytes read
}

// rawSubscribe opens a subscription to topic (none when empty) and the URL
// patterns on a new connection and returns once the hub answered 200 with
// an event stream; ctx bounds the opening only.
func (e *Env) rawSubscribe(ctx context.Context, topic string, patterns []string) (*rawConn, error) {
	cfg := e.Cfg
	u, err := url.Parse(cfg.firstHub())
	if err != nil {
		return nil, err
	}
	q := u.Query()
	switch {
	case topic == "":
	case cfg.Draft7:
		q.Add("topic", topic)
	default:
		q.Add("match", topic)
	}
	for _, p := range patterns {
		q.Add("match_urlpattern", p)
	}
	u.RawQuery = q.Encode()
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	c, err := e.dialer.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	rc := &rawConn{nc: c}
	rc.tcp, _ = c.(*net.TCPConn)
	fail := func(err error) (*rawConn, error) {
		_ = c.Close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if rc.tcp == nil {
		return fail(fmt.Errorf("not a TCP connection: %T", c))
	}
	// The opening obeys ctx and a deadline; the stream, neither.
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(churnConnectTimeout))
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if u.Scheme == "https" {
		tc := tls.Client(c, &tls.Config{ServerName: u.Hostname(), InsecureSkipVerify: cfg.Insecure, NextProtos: []string{"http/1.1"}}) //nolint:gosec // --insecure, for self-signed test hubs
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(err)
		}
		rc.nc = tc
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if cfg.SubscriberToken != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.SubscriberToken)
	}
	if err := req.Write(rc.nc); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(rc, 4<<10), req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fail(&statusError{code: resp.StatusCode, msg: fmt.Sprintf("hub answered %s: %s", resp.Status, strings.TrimSpace(string(b)))})
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fail(fmt.Errorf("hub answered %q: %w", ct, errNotEventStream))
	}
	if !stop() {
		return fail(context.Cause(ctx))
	}
	_ = c.SetDeadline(time.Time{})
	rc.resp = resp
	rc.read.Store(0)
	return rc, nil
}

// errNotEventStream is a subscription answered 200 with something else
// than an event stream.
var errNotEventStream = errors.New("not an event stream")

// statusError is a subscription the hub refused with an HTTP status.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// Read reads from the connection; while draining, each read gives up
// after quiet without data.
func (c *rawConn) Read(p []byte) (int, error) {
	if c.draining.Load() {
		_ = c.nc.SetReadDeadline(time.Now().Add(time.Duration(c.quiet.Load())))
	}
	n, err := c.nc.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// body is the event stream.
func (c *rawConn) body() io.Reader { return c.resp.Body }

// drain makes every further read give up after quiet without data, and
// wakes a read waiting now.
func (c *rawConn) drain(quiet time.Duration) {
	c.quiet.Store(int64(quiet))
	c.draining.Store(true)
	_ = c.nc.SetReadDeadline(time.Now().Add(quiet))
}

// reset drops the connection abruptly: SO_LINGER 0 makes close send RST
// (no FIN, nothing flushed, no TLS close_notify).
func (c *rawConn) reset() {
	_ = c.tcp.SetLinger(0)
	_ = c.tcp.Close()
}

// close closes the connection cleanly (FIN).
func (c *rawConn) close() { _ = c.nc.Close() }
