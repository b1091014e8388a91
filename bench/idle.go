package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"time"
)

func init() {
	Register(Scenario{
		Name:    "idle",
		Summary: "N subscriber streams held idle for --duration: server RSS, goroutines, open fds and CPU per connection (--server-pid, /metrics)",
		Defaults: func(c *Config) {
			setDefault(&c.Settle, 10*time.Second)
		},
		Budget: func(c *Config) time.Duration {
			return c.ConnectTimeout + c.Duration + c.Settle + 90*time.Second
		},
		Run: runIdle,
	})
}

// runIdle samples the server, opens Cfg.Subscribers streams (spread over
// worker processes as the fleet decides), samples the server several times
// while they sit idle for Cfg.Duration, closes them, waits up to
// Cfg.Settle for the server's connections to go, and samples it again.
func runIdle(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	probe, err := e.newServerProbe(ctx)
	if err != nil {
		return nil, err
	}
	defer probe.close()
	r := &Result{Subscribers: cfg.Subscribers, Topics: cfg.Topics, Extra: map[string]any{}}
	r.Notes = append(r.Notes, probe.notes...)

	var before serverSample
	if probe.ok() {
		if before, err = probe.sample(ctx); err != nil {
			return nil, fmt.Errorf("sample the server before: %w", err)
		}
	}

	fleet := e.NewFleet(FleetSpec{Subscribers: cfg.Subscribers, Topics: e.Topics("idle", cfg.Topics), URLPatterns: sharedPatterns(cfg.Patterns)})
	defer fleet.Close()
	mon := e.StartMonitor("idle", func() Counters { return Counters{Open: fleet.Stats().Open} })
	defer mon.Stop()

	mon.SetPhase("connecting")
	connectStart := time.Now()
	if err := fleet.Open(ctx); err != nil {
		return nil, fmt.Errorf("open subscribers: %w", err)
	}
	opened := fleet.Stats()
	holdStart := time.Now()
	r.ConnectErrors = opened.ConnectErrors
	if d := holdStart.Sub(connectStart); d > 0 {
		r.Extra["connected"] = fmt.Sprintf("%s in %.1f s (%s/s)", num(float64(opened.Opened)), d.Seconds(), num(float64(opened.Opened)/d.Seconds()))
	}
	if opened.Opened < int64(cfg.Subscribers) {
		r.Notes = append(r.Notes, fmt.Sprintf("only %d of %d subscribers connected", opened.Opened, cfg.Subscribers))
	}

	// Hold. The first sample waits a moment for the server to finish with
	// the connection storm, so that the CPU window covers idleness only.
	mon.SetPhase("idle")
	holdEnd := holdStart.Add(cfg.Duration)
	var during []serverSample
	var sampleErr error
	if probe.ok() {
		warm := min(time.Second, cfg.Duration/4)
		every := min(max(cfg.Duration/10, 500*time.Millisecond), 5*time.Second)
		for at := holdStart.Add(warm); ; at = at.Add(every) {
			if at.After(holdEnd) {
				at = holdEnd
			}
			if !sleepUntil(ctx, at) {
				break
			}
			s, err := probe.sample(ctx)
			if err != nil {
				sampleErr = err
			} else {
				during = append(during, s)
			}
			if !at.Before(holdEnd) {
				break
			}
		}
	} else {
		sleepUntil(ctx, holdEnd)
	}
	held := fleet.Stats()
	r.DurationS = time.Since(holdStart).Seconds()

	mon.SetPhase("closing")
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
	defer cancel()
	fr, ferr := fleet.Finish(fctx, PublishLog{})
	if ferr == nil {
		r.Reconnects = fr.Stats.Reconnects
		r.Notes = append(r.Notes, fr.Errors...)
	}
	if lost := opened.Open - held.Open; lost > 0 || r.Reconnects > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("while idle, %d streams ended and %d reconnected: the hub does not hold idle streams", max(lost, 0), r.Reconnects))
	}

	// After: wait for the server to let the connections go.
	var after serverSample
	var afterS float64
	if probe.ok() && ctx.Err() == nil {
		mon.SetPhase("settling")
		closed := time.Now()
		deadline := closed.Add(cfg.Settle)
		back := false
		for !back {
			s, err := probe.sample(ctx)
			if err == nil {
				after, afterS = s, time.Since(closed).Seconds()
				back = connsBack(before, s)
			} else {
				sampleErr = err
			}
			next := time.Now().Add(500 * time.Millisecond)
			if back || next.After(deadline) || !sleepUntil(ctx, next) {
				break
			}
		}
		if !back && !after.At.IsZero() && ctx.Err() == nil {
			r.Notes = append(r.Notes, fmt.Sprintf("the server still held connections or goroutines %s after the subscribers left", cfg.Settle))
		}
	}
	r.Timeline = mon.Stop()
	if sampleErr != nil {
		r.Notes = append(r.Notes, "a server sample failed: "+sampleErr.Error())
	}

	if len(during) > 0 {
		n := float64(opened.Open)
		mid := func(get func(serverSample) float64) float64 {
			vs := make([]float64, len(during))
			for i, s := range during {
				vs[i] = get(s)
			}
			slices.Sort(vs)
			return vs[len(vs)/2]
		}
		fig := func(key, unit string, get func(serverSample) float64) {
			f := &serverFigure{Unit: unit, Before: get(before), During: mid(get), After: -1}
			if !after.At.IsZero() {
				f.After = get(after)
			}
			if n > 0 {
				f.PerConn = (f.During - f.Before) / n
			}
			r.Extra[key] = f
		}
		if before.RSSBytes > 0 {
			fig("server_rss", "bytes", func(s serverSample) float64 { return float64(s.RSSBytes) })
			fig("server_open_fds", "count", func(s serverSample) float64 { return float64(s.OpenFDs) })
			r.ServerRSSPerConnKB = r.Extra["server_rss"].(*serverFigure).PerConn / 1024
			first, last := during[0], during[len(during)-1]
			if w := last.At.Sub(first.At).Seconds(); w > 0 {
				cpu := last.CPUSeconds - first.CPUSeconds
				r.Extra["server_cpu_idle"] = &cpuFigure{Percent: 100 * cpu / w, CPUSeconds: cpu, WindowS: w}
			}
		}
		if before.Goroutines >= 0 {
			fig("server_goroutines", "count", func(s serverSample) float64 { return float64(s.Goroutines) })
		}
		if before.HeapBytes > 0 {
			fig("server_heap_inuse", "bytes", func(s serverSample) float64 { return float64(s.HeapBytes) })
		}
		if before.Connections >= 0 {
			fig("server_connections", "count", func(s serverSample) float64 { return float64(s.Connections) })
		}
		if !after.At.IsZero() {
			r.Extra["settled_after"] = seconds(afterS)
		}
	}
	if ferr != nil {
		return r, fmt.Errorf("close subscribers: %w", ferr)
	}
	return r, ctx.Err()
}

// connsBack reports whether the server's connections (herald_connections,
// else open fds) and goroutines are back near what before had.
func connsBack(before, now serverSample) bool {
	switch {
	case before.Connections >= 0 && now.Connections >= 0:
		if now.Connections > before.Connections+2 {
			return false
		}
	case before.OpenFDs > 0:
		if now.OpenFDs > before.OpenFDs+2 {
			return false
		}
	}
	if before.Goroutines >= 0 && now.Goroutines > before.Goroutines+5 {
		return false
	}
	return true
}

// sleepUntil waits until t or ctx's end, and reports whether t came.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// seconds is a time in Result.Extra: a number in JSON, "1.5 s" in the table.
type seconds float64

func (s seconds) String() string { return fmt.Sprintf("%.1f s", float64(s)) }

func (s seconds) MarshalJSON() ([]byte, error) { return fmt.Appendf(nil, "%.3f", float64(s)), nil }

// serverFigure is one server measure before, during and after a phase of
// a run, and its growth per connection.
type serverFigure struct {
	Unit    string  `json:"unit"` // bytes or count
	Before  float64 `json:"before"`
	During  float64 `json:"during"`
	After   float64 `json:"after"` // -1: not sampled
	PerConn float64 `json:"per_conn"`
}

func (f *serverFigure) String() string {
	v, per := countStr, func(x float64) string { return fmt.Sprintf("%.2f", x) }
	if f.Unit == "bytes" {
		v, per = bytesStr, func(x float64) string { return fmt.Sprintf("%.1f KB", x/1024) }
	}
	s := fmt.Sprintf("before %s, idle %s", v(f.Before), v(f.During))
	if f.After >= 0 {
		s += ", after " + v(f.After)
	}
	return s + fmt.Sprintf(": %s per connection", per(f.PerConn))
}

// cpuFigure is the server's CPU use over a window.
type cpuFigure struct {
	Percent    float64 `json:"percent"` // of one core
	CPUSeconds float64 `json:"cpu_s"`
	WindowS    float64 `json:"window_s"`
}

func (f *cpuFigure) String() string {
	return fmt.Sprintf("%.2f%% of one core (%.2f CPU-s over %.1f s)", f.Percent, f.CPUSeconds, f.WindowS)
}

func countStr(v float64) string { return num(v) }

func bytesStr(v float64) string {
	switch {
	case v >= 10<<20 || v <= -10<<20:
		return fmt.Sprintf("%.0f MB", v/(1<<20))
	case v >= 1<<20 || v <= -1<<20:
		return fmt.Sprintf("%.1f MB", v/(1<<20))
	default:
		return fmt.Sprintf("%.0f KB", v/1024)
	}
}

// serverProbe samples the hub's process (Cfg.ServerPID, through
// SampleServer) and its Prometheus endpoint, when there are.
type serverProbe struct {
	pid     int
	metrics string // "" when there is none that answers
	http    *http.Client
	notes   []string
}

// serverSample is one sample of the server, with the herald metrics the
// scenarios need beyond ServerStats.
type serverSample struct {
	ServerStats
	At time.Time
	// Subscribers is herald_subscribers (-1: unknown); SlowDisconnects
	// herald_slow_subscriber_disconnects_total and QueueBytes
	// herald_queue_bytes (-1: unknown).
	Subscribers     int
	SlowDisconnects float64
	QueueBytes      float64
	// MetricOpenFDs, MetricRSS and MaxFDs are the process collector's
	// process_open_fds, process_resident_memory_bytes and process_max_fds
	// (-1: unknown): the figures /proc gives when --server-pid is not.
	MetricOpenFDs, MetricRSS, MaxFDs float64
	// LastGC is go_memstats_last_gc_time_seconds, the end of the last GC
	// cycle in Unix seconds (-1: unknown).
	LastGC float64
	// Watched holds every counter or gauge series whose name contains one
	// of watchedWords, by name and labels, e.g.
	// herald_listener_refused_total{reason="limit"}.
	Watched map[string]float64
}

// openFDs is the server's open descriptors, from /proc or else from its
// metrics (-1: unknown).
func (s serverSample) openFDs() float64 {
	if s.OpenFDs > 0 {
		return float64(s.OpenFDs)
	}
	return s.MetricOpenFDs
}

// rss is the server's resident memory in bytes, from /proc or else from
// its metrics (-1: unknown).
func (s serverSample) rss() float64 {
	if s.RSSBytes > 0 {
		return float64(s.RSSBytes)
	}
	return s.MetricRSS
}

// newServerProbe checks --server-pid (an error when it cannot be read)
// and finds the metrics endpoint: --metrics-url, or the hub's origin +
// /metrics, kept only when it answers.
func (e *Env) newServerProbe(ctx context.Context) (*serverProbe, error) {
	cfg := e.Cfg
	p := &serverProbe{pid: cfg.ServerPID, http: &http.Client{
		// No gzip: compressing the page costs the server a flate writer
		// per scrape, which would show up in the very figures measured.
		Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 5 * time.Minute, DisableCompression: true},
		Timeout:   10 * time.Second,
	}}
	if p.pid < 0 {
		return nil, fmt.Errorf("--server-pid %d", p.pid)
	}
	if p.pid > 0 {
		if _, err := SampleServer(ctx, p.pid, ""); err != nil {
			return nil, fmt.Errorf("--server-pid: %w", err)
		}
	} else {
		p.notes = append(p.notes, "no --server-pid: server RSS, CPU and open fds not measured")
	}
	mu := cfg.MetricsURL
	given := mu != ""
	if mu == "off" {
		return p, nil
	}
	if !given {
		var err error
		if mu, err = defaultMetricsURL(cfg.firstHub()); err != nil {
			return nil, err
		}
	}
	u, err := url.Parse(mu)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--metrics-url %q: not an http(s) URL", mu)
	}
	if !cfg.AllowRemote {
		if err := requireLoopback(ctx, u.Hostname()); err != nil {
			return nil, fmt.Errorf("--metrics-url: %w", err)
		}
	}
	if cfg.Insecure {
		p.http.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // --insecure, for self-signed test hubs
	}
	p.metrics = mu
	var st serverSample
	if err := p.readMetrics(ctx, &st); err != nil {
		p.metrics = ""
		if given {
			p.notes = append(p.notes, fmt.Sprintf("--metrics-url %s does not answer (%v): goroutines, heap and connections not measured", mu, err))
		} else {
			p.notes = append(p.notes, fmt.Sprintf("no metrics at %s: goroutines, heap and connections not measured (--metrics-url)", mu))
		}
	}
	return p, nil
}

// defaultMetricsURL is /metrics on the hub's origin, where herald serves
// it unless --admin-addr moved it.
func defaultMetricsURL(hub string) (string, error) {
	u, err := url.Parse(hub)
	if err != nil {
		return "", err
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/metrics"}).String(), nil
}

// ok reports whether there is anything to sample.
func (p *serverProbe) ok() bool { return p.pid > 0 || p.metrics != "" }

func (p *serverProbe) close() { p.http.CloseIdleConnections() }

// sample takes one sample: /proc through SampleServer, then /metrics.
func (p *serverProbe) sample(ctx context.Context) (serverSample, error) {
	s := serverSample{ServerStats: ServerStats{Goroutines: -1, Connections: -1}, Subscribers: -1, SlowDisconnects: -1, QueueBytes: -1,
		MetricOpenFDs: -1, MetricRSS: -1, MaxFDs: -1, LastGC: -1}
	if p.pid > 0 {
		st, err := SampleServer(ctx, p.pid, "")
		if err != nil {
			return s, err
		}
		s.ServerStats = st
	}
	if p.metrics != "" {
		if err := p.readMetrics(ctx, &s); err != nil {
			return s, err
		}
	}
	s.At = time.Now()
	return s, nil
}

// readMetrics fills s's metrics from one fetch of the endpoint.
func (p *serverProbe) readMetrics(ctx context.Context, s *serverSample) error {
	ctx, cancel := context.WithTimeout(ctx, procMetricsTimeout)
	defer cancel()
	families, err := procFetchMetrics(ctx, p.http, p.metrics)
	if err != nil {
		return err
	}
	if len(families) == 0 {
		return errors.New("no metrics")
	}
	procFillStats(families, &s.ServerStats)
	value := func(name string) float64 {
		if v, ok := families.value(name); ok {
			return v
		}
		return -1
	}
	s.Subscribers = int(value("herald_subscribers"))
	s.SlowDisconnects = value("herald_slow_subscriber_disconnects_total")
	s.QueueBytes = value("herald_queue_bytes")
	s.MetricOpenFDs = value("process_open_fds")
	s.MetricRSS = value("process_resident_memory_bytes")
	s.MaxFDs = value("process_max_fds")
	s.LastGC = value("go_memstats_last_gc_time_seconds")
	s.Watched = families.watched(watchedWords)
	return nil
}
