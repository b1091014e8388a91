package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/listener"
	"github.com/herald-hub/herald/mercure"
)

// stormConfig is a small storm from two storm workers (this test binary,
// re-executed) beside ten prompt subscribers.
func stormConfig(cfg Config) Config {
	cfg.Subscribers, cfg.Publishers, cfg.Rate = 10, 2, 100
	cfg.Duration, cfg.Drain, cfg.Settle = 1200*time.Millisecond, 5*time.Second, 10*time.Second
	cfg.StormConns, cfg.StormWindow, cfg.StormWorkers = 300, 300*time.Millisecond, 2
	cfg.WorkerCommand = []string{os.Args[0]}
	cfg.WorkerEnv = []string{workerEnv + "=1"}
	return cfg
}

// stormParts returns the storm's summary and both passes, failing the
// test when the prompt subscribers did not get everything in either.
func stormParts(t *testing.T, r *Result) *stormSummary {
	t.Helper()
	calm, _ := r.Extra["calm"].(*passSummary)
	storm, _ := r.Extra["storm"].(*passSummary)
	sum, _ := r.Extra["storm_attempts"].(*stormSummary)
	if calm == nil || storm == nil || sum == nil {
		t.Fatalf("extra %v", r.Extra)
	}
	for name, p := range map[string]*passSummary{"calm": calm, "storm": storm} {
		if p.Subscribers != 10 || p.Expected == 0 || p.Delivered != p.Expected || p.Lost != 0 || p.Duplicates != 0 || p.OutOfOrder != 0 {
			t.Errorf("%s: %s", name, p)
		}
	}
	if q, _ := r.Extra["p99_ratio"].(ratio); q <= 0 {
		t.Errorf("p99_ratio %v", r.Extra["p99_ratio"])
	}
	if sum.Attempts != 300 || sum.Workers != 2 {
		t.Errorf("storm of %d attempts from %d workers, want 300 from 2", sum.Attempts, sum.Workers)
	}
	// Every attempt has exactly one outcome.
	var status int64
	for _, n := range sum.Status {
		status += n
	}
	if got := sum.NotStarted + sum.Aborted + sum.Admitted + sum.Shed + sum.Refused + status + sum.EndedAtOnce + sum.LocalErrors; got != sum.Attempts {
		t.Errorf("outcomes add up to %d of %d attempts: %s", got, sum.Attempts, sum)
	}
	if sum.Started != 300 || sum.NotStarted != 0 || sum.LocalErrors != 0 || sum.EndedAtOnce != 0 || sum.Dropped != 0 {
		t.Errorf("storm %s; errors %v", sum, sum.Errors)
	}
	noChildren(t)
	return sum
}

// TestStormHerald storms a herald without limits: it admits every
// attempt and the prompt subscribers lose nothing.
func TestStormHerald(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	cfg, h := newServedHerald(t, nil, 0)
	cfg = stormConfig(cfg)
	r, obj := run(t, "storm", cfg)
	sum := stormParts(t, r)
	if sum.Admitted != 300 || sum.Shed != 0 || sum.Refused != 0 || len(sum.Status) != 0 {
		t.Errorf("storm %s", sum)
	}
	if sum.AdmittedMs == nil || sum.AdmittedMs.P50 <= 0 || sum.RefusedMs != nil {
		t.Errorf("timings: admitted %v, refused %v", sum.AdmittedMs, sum.RefusedMs)
	}
	g, _ := r.Extra["server_goroutines"].(*settleFigure)
	if g == nil || g.Baseline <= 0 || g.Peak < g.Baseline+150 || !g.Returned {
		t.Errorf("server goroutines %v: want a peak above the baseline by most of the 300 held streams, and back", g)
	}
	waitSubscribers(t, h, 0)
	extra, _ := obj["extra"].(map[string]any)
	if s, _ := extra["storm_attempts"].(map[string]any); s["admitted"] != 300.0 || s["admitted_ms"] == nil {
		t.Errorf("JSON extra.storm_attempts %v", s)
	}
	tab := table(t, r)
	t.Log("\n" + tab)
	for _, want := range []string{"storm attempts", "300 admitted", "p99 ratio", "server goroutines"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

// TestStormLimits storms a herald behind a listener that resets
// connections past 60 open, whose handler sheds every third storm
// subscription: the storm must count the resets as refused and the shed
// answers as shed, as the hub's own counters do, and admit the rest.
func TestStormLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	var subs, sheds atomic.Int64
	cfg, _ := newServedHeraldWith(t, servedHerald{
		process: true,
		listen: func(t *testing.T, ln net.Listener, reg prometheus.Registerer) net.Listener {
			l, err := listener.Wrap(ln, listener.Config{MaxConns: 60, Registerer: reg, MetricsPrefix: "herald_listener_"})
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		// The first 20 subscriptions are the prompt subscribers of both
		// runs; of the storm's, every third is sent away.
		shed: func() string {
			if n := subs.Add(1); n > 20 && n%3 == 0 {
				sheds.Add(1)
				return mercure.ShedConnections
			}
			return ""
		},
	})
	cfg = stormConfig(cfg)
	r, _ := run(t, "storm", cfg)
	sum := stormParts(t, r)
	if sum.Refused == 0 || sum.Shed == 0 || sum.Admitted == 0 || len(sum.Status) != 0 {
		t.Errorf("storm %s", sum)
	}
	if sum.Shed != sheds.Load() {
		t.Errorf("%d counted shed, the hub shed %d", sum.Shed, sheds.Load())
	}
	// Each storm attempt the listener let through met the hook once.
	if through := subs.Load() - 20; sum.Admitted+sum.Shed != through {
		t.Errorf("%d admitted and %d shed, %d reached the handler", sum.Admitted, sum.Shed, through)
	}
	if sum.RefusedMs == nil || sum.ShedMs == nil || sum.RefusedBy["timeout"] != 0 {
		t.Errorf("refused %v by %v, shed %v", sum.RefusedMs, sum.RefusedBy, sum.ShedMs)
	}
	hc, _ := r.Extra["hub_counters"].(hubCounters)
	shed := hc[`herald_subscriptions_shed_total{reason="connections"}`]
	if shed.Delta != float64(sum.Shed) {
		t.Errorf("hub counters %v: shed delta %g, want %d", hc, shed.Delta, sum.Shed)
	}
	// The listener also resets what else came at the cap: the server
	// probe samples every 500 ms beside the pass's own samples, and a
	// sample that needs a second connection then is refused too.
	refused := hc[`herald_listener_refused_total{reason="limit"}`]
	if d := refused.Delta - float64(sum.Refused); d < 0 || d > 10 {
		t.Errorf("hub counters %v: refused delta %g, the storm counted %d; notes %q", hc, refused.Delta, sum.Refused, r.Notes)
	}
	for _, k := range []string{"server_heap_inuse", "server_rss"} {
		if f, _ := r.Extra[k].(*settleFigure); f == nil || f.Baseline <= 0 || f.Peak <= 0 {
			t.Errorf("%s: %v", k, f)
		}
	}
	// Each admitted storm stream held a descriptor and goroutines of the
	// hub, which runs in this process (the samples, every 500 ms, may
	// miss the first and last of them); they must have gone.
	for _, k := range []string{"server_goroutines", "server_open_fds"} {
		if f, _ := r.Extra[k].(*settleFigure); f == nil || f.Baseline <= 0 || f.Peak < f.Baseline+float64(sum.Admitted/2) || !f.Returned {
			t.Errorf("%s: %v", k, f)
		}
	}
	tab := table(t, r)
	t.Log("\n" + tab)
	for _, want := range []string{"hub counters", "herald_listener_refused_total", "shed (p50"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

// TestStormerOutcomes makes a storm in this process against a server
// that answers its connections in turn in five ways: a reset after the
// request, a 503, herald's shed answer, an event stream that ends at once
// without a retry field, and one that stays open. Each way must be
// counted as what it is, exactly.
func TestStormerOutcomes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	chunk := func(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }
	var wg sync.WaitGroup
	var conns sync.Map
	wg.Go(func() {
		for k := 0; ; k++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			wg.Go(func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				switch k % 5 {
				case 0:
					_ = c.(*net.TCPConn).SetLinger(0)
					return
				case 1:
					_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
					return
				case 2:
					_, _ = io.WriteString(c, head+chunk(": shed: test\nretry: 5000\n\n")+"0\r\n\r\n")
				case 3:
					_, _ = io.WriteString(c, head+chunk(": bye\n\n")+"0\r\n\r\n")
				case 4:
					_, _ = io.WriteString(c, head)
				}
				_, _ = io.Copy(io.Discard, c) // until the client closes
			})
		}
	})
	defer func() {
		_ = ln.Close()
		conns.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
		wg.Wait()
	}()

	cfg := Config{Hub: "http://" + ln.Addr().String() + mercure.DefaultPath}
	cfg.fill()
	e, err := newEnv(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	s := newStormer(t.Context(), e, StormSpec{Conns: 50, Workers: 1, Window: 200 * time.Millisecond, Topic: "https://example.com/quiet"})
	s.start()
	r := s.finish()
	want := &StormResult{Attempts: 50, Started: 50, Admitted: 10, Shed: 10, Refused: 10, EndedAtOnce: 10,
		RefusedBy: map[string]int64{"reset": 10}, Status: map[string]int64{"503": 10}}
	got := *r
	got.hists, got.PendingAtWindowEnd, got.LastStartS, got.Errors = nil, 0, 0, nil
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("outcomes\n%+v, want\n%+v; errors %v", got, *want, r.Errors)
	}
	for _, k := range stormOutcomes {
		if n := r.hists[k].TotalCount(); n != 10 {
			t.Errorf("%d %s times, want 10", n, k)
		}
	}
	if r.LastStartS <= 0 || r.LastStartS > 0.2+0.1 {
		t.Errorf("last attempt started at %.3f s of a 0.2 s window", r.LastStartS)
	}
}

// TestRefusal names refusals by their errors, and tells them from errors
// of the storm's own making.
func TestRefusal(t *testing.T) {
	op := func(err error) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{op(syscall.ECONNREFUSED), "connection_refused"},
		{op(syscall.ECONNRESET), "reset"},
		{fmt.Errorf("subscribe: %w", io.ErrUnexpectedEOF), "eof"},
		{fmt.Errorf("subscribe: %w", os.ErrDeadlineExceeded), "timeout"},
		{context.DeadlineExceeded, "timeout"},
		{op(syscall.EADDRNOTAVAIL), ""},
		{op(syscall.EMFILE), ""},
		{errors.New("something else"), "other"},
	} {
		if got := refusal(c.err); got != c.want {
			t.Errorf("refusal(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// TestWatchedSeries picks the series whose names hold a watched word
// as whole parts, with their labels.
func TestWatchedSeries(t *testing.T) {
	f, err := procParseFamilies(strings.NewReader(`# TYPE herald_listener_refused_total counter
herald_listener_refused_total{reason="limit"} 3
herald_listener_refused_total{reason="rate"} 0
# TYPE herald_feed_overflows_total counter
herald_feed_overflows_total 1
# TYPE herald_listener_accept_errors_total counter
herald_listener_accept_errors_total{kind="emfile"} 2
# TYPE herald_updates_published_total counter
herald_updates_published_total 9
# TYPE herald_listener_overload_pauses_total counter
herald_listener_overload_pauses_total 2
# TYPE herald_listener_paused_sockets gauge
herald_listener_paused_sockets 0
# TYPE unsheddable gauge
unsheddable 1
# TYPE herald_publish_duration_seconds histogram
herald_publish_duration_seconds_bucket{le="+Inf"} 1
herald_publish_duration_seconds_sum 1
herald_publish_duration_seconds_count 1
`))
	if err != nil {
		t.Fatal(err)
	}
	got := f.watched(watchedWords)
	want := map[string]float64{
		`herald_listener_refused_total{reason="limit"}`:      3,
		`herald_listener_refused_total{reason="rate"}`:       0,
		`herald_feed_overflows_total`:                        1,
		`herald_listener_accept_errors_total{kind="emfile"}`: 2,
		`herald_listener_overload_pauses_total`:              2,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("watched %v, want %v", got, want)
	}
}

func TestParseListenCounters(t *testing.T) {
	in := "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPBacklogDrop\n" +
		"TcpExt: 1 22 33 4\n" +
		"IpExt: InNoRoutes\nIpExt: 0\n"
	c, err := parseListenCounters([]byte(in))
	if err != nil || c.Overflows != 22 || c.Drops != 33 {
		t.Errorf("%+v, %v", c, err)
	}
	if _, err := parseListenCounters([]byte("TcpExt: ListenOverflows\nTcpExt: 1 2\n")); err == nil {
		t.Error("names and values of different lengths accepted")
	}
}

// noChildren fails the test if this process has a child left (Linux).
func noChildren(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		return
	}
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		// After the command name's closing parenthesis: state, then ppid.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == self {
			t.Errorf("child process left: %s", strings.TrimSpace(s))
		}
	}
}
