package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

func init() {
	Register(Scenario{
		Name:    "storm",
		Summary: "fanout to --subscribers, calm, then the same with a storm of --storm-conns connection attempts within --storm-window a quarter into publishing: the subscribers' P99 and loss in both runs, how the attempts ended (admitted, shed, refused) and how fast, the hub's refusal and overflow counters, and whether its goroutines, fds and memory come back (/metrics, --server-pid)",
		Defaults: func(c *Config) {
			setDefault(&c.Publishers, 4)
			setDefault(&c.StormConns, 30_000)
			setDefault(&c.StormWindow, 3*time.Second)
			setDefault(&c.Settle, 30*time.Second)
		},
		Budget: func(c *Config) time.Duration {
			pass := c.ConnectTimeout + c.Duration + c.Drain + 30*time.Second
			storm := c.StormWindow + stormAttemptTimeout + stormShedWait + stormSettleMore + 90*time.Second
			return 2*pass + storm + 2*c.Settle + 30*time.Second
		},
		Run: runStorm,
	})
}

// stormP99Factor is what the storm may do to the subscribers' P99: at
// most 1.5 times the calm figure.
const stormP99Factor = 1.5

// Back near the baseline means, for the server: goroutines at most
// stormGoroutineSlack over it, open descriptors stormFDSlack over it (a
// scrape's connection, a publisher's reconnection), heap and RSS at most
// stormMemFactor times it.
const (
	stormGoroutineSlack = 5
	stormFDSlack        = 5
	stormMemFactor      = 1.5
)

// stormSampleEvery is how often the server is sampled during the storm
// pass for the peaks, and after it until it is back.
const stormSampleEvery = 500 * time.Millisecond

// watchedWords pick the hub's metrics the storm reports whatever their
// exact names: refusals, shedding, queue overflows and drops, failed
// accepts, pauses in listening (herald's listener_refused_total,
// subscriptions_shed_total, tcp_listen_overflows_total,
// listener_overload_pauses_total, …). A word matches whole parts of a name
// between underscores, the last one maybe plural (procFamilies.watched):
// "shed" is not in updates_published_total.
var watchedWords = []string{"refused", "shed", "overflow", "drops", "accept_errors", "pause"}

// runStorm runs the same fanout twice, calm, then with a connection storm
// beside it: a quarter into publishing, Cfg.StormConns connection
// attempts, spread evenly over Cfg.StormWindow and over storm worker
// processes and source addresses, each a subscription request to a topic
// nobody publishes on, classified by how the hub answered (StormResult).
// Streams the hub admits are held until publishing ends. Before the storm
// pass the server is sampled once back to rest after the calm one (the
// baseline), during it every stormSampleEvery (the peaks), and after it
// until its goroutines and descriptors are back near the baseline or
// Cfg.Settle has passed. The Result is the storm pass's, for the prompt
// subscribers; Extra sets both passes side by side and holds the storm,
// the server's figures and the hub's watched counters.
//
// The storm's attempts speak HTTP/1.1, one connection each, whatever
// Cfg.HTTP2 says of the prompt subscribers: it is a storm of connections.
// With several hubs in Cfg.Hub it goes to the first.
func runStorm(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	switch {
	case cfg.StormConns > 1_000_000:
		return nil, fmt.Errorf("--storm-conns %d exceeds 1,000,000", cfg.StormConns)
	case cfg.StormWindow > time.Hour:
		return nil, fmt.Errorf("--storm-window %s exceeds an hour", cfg.StormWindow)
	}
	probe, err := e.newServerProbe(ctx)
	if err != nil {
		return nil, err
	}
	defer probe.close()
	var cur passCounters
	mon := e.StartMonitor("storm", cur.counters)
	defer mon.Stop()

	var notes []string
	var idle serverSample
	if probe.ok() {
		if idle, err = probe.sample(ctx); err != nil {
			return nil, fmt.Errorf("sample the server before: %w", err)
		}
	}
	calm, err := slowPass(ctx, e, mon, &cur, probe, "calm", cfg.Subscribers, crowd{})
	if err != nil {
		return nil, fmt.Errorf("calm run: %w", err)
	}
	if ctx.Err() != nil {
		calm.res.Timeline = mon.Stop()
		return calm.res, ctx.Err()
	}

	// The baseline: the hub at rest again after the calm run, which has
	// warmed it as the storm run will find it. At rest means without our
	// publishers' keep-alive connections too, as it was found.
	e.closeIdle()
	var baseline serverSample
	if probe.ok() {
		mon.SetPhase("calm: settling")
		figs := stormFigures(idle)
		calmEnd := time.Now()
		s, back, err := waitBack(ctx, probe, figs, false, calmEnd, calmEnd.Add(cfg.Settle))
		if err != nil {
			notes = append(notes, "a server sample failed after the calm run: "+err.Error())
		}
		if !back && ctx.Err() == nil {
			notes = append(notes, fmt.Sprintf("after the calm run the server was not back within %s to where it started: the baseline is what it was then", cfg.Settle))
		}
		baseline = s
	}
	kernel0, kernelErr := readListenCounters()

	peaks := &serverPeaks{figs: stormFigures}
	stopSampling := sampleWhile(ctx, probe, peaks)
	storm, err := slowPass(ctx, e, mon, &cur, probe, "storm", cfg.Subscribers, crowd{storm: true})
	sampleErrs := stopSampling()
	if err != nil {
		return nil, fmt.Errorf("storm run: %w", err)
	}
	stormEnd := time.Now()
	r := storm.res
	r.Extra = map[string]any{
		"calm":  summarizePass(calm.res),
		"storm": summarizePass(storm.res),
	}

	// After: watch the server come back.
	e.closeIdle()
	var after serverSample
	if probe.ok() && !baseline.At.IsZero() {
		mon.SetPhase("settling")
		figs := stormFigures(baseline)
		var back bool
		after, back, err = waitBack(ctx, probe, figs, true, stormEnd, stormEnd.Add(cfg.Settle))
		if err != nil {
			notes = append(notes, "a server sample failed after the storm: "+err.Error())
		}
		r.Extra["watched_after"] = seconds(time.Since(stormEnd).Seconds())
		for _, f := range figs {
			f.End = f.get(storm.end)
			if storm.end.At.IsZero() {
				f.End = -1
			}
			f.Peak = max(f.End, peaks.get(f.key), f.Final)
			r.Extra[f.key] = f
		}
		if !back && ctx.Err() == nil {
			var notBack []string
			for _, f := range figs {
				if !f.Returned && (awaited(f.key) || f.key == "server_heap_inuse" && gcSince(after, stormEnd)) {
					notBack = append(notBack, strings.TrimPrefix(f.key, "server_"))
				}
			}
			notes = append(notes, fmt.Sprintf("FAILED: the server's %s not back near the baseline within %s of the storm", strings.Join(notBack, ", "), cfg.Settle))
		}
		for _, f := range figs {
			if f.key == "server_heap_inuse" && !f.Returned && !gcSince(after, stormEnd) {
				notes = append(notes, fmt.Sprintf("the server's heap in use was still %s, but no GC cycle ran after the storm to free it (an idle Go process runs one within 2 minutes): nothing to judge yet", bytesStr(f.Final)))
			}
		}
		if c := watchedDelta(baseline.Watched, after.Watched); len(c) > 0 {
			r.Extra["hub_counters"] = c
			notes = append(notes, c.notes()...)
		}
		if peak := peaks.get("server_open_fds"); baseline.MaxFDs > 0 && peak >= baseline.MaxFDs-stormFDSlack {
			notes = append(notes, fmt.Sprintf("the hub reached its open-files limit: %s open of %s", num(peak), num(baseline.MaxFDs)))
		}
	}
	if sampleErrs > 0 {
		notes = append(notes, fmt.Sprintf("%d server samples failed during the storm run (the hub did not answer /metrics)", sampleErrs))
	}
	if kernelErr == nil {
		if kernel1, err := readListenCounters(); err == nil {
			r.Extra["kernel_listen_queues"] = kernel1.since(kernel0)
		}
	}

	sum := summarizeStorm(cfg, storm.storm, storm.stormWorkers)
	r.Extra["storm_attempts"] = sum
	notes = append(notes, sum.notes()...)
	if a := calm.res.Latency.P99; a > 0 {
		q := ratio(storm.res.Latency.P99 / a)
		r.Extra["p99_ratio"] = q
		r.Extra["p99_bound_ms"] = round2(stormP99Factor * a)
		if float64(q) > stormP99Factor {
			notes = append(notes, fmt.Sprintf("FAILED: the storm took the subscribers' P99 to %.1f ms, past %.1f× the calm %.1f ms", storm.res.Latency.P99, stormP99Factor, a))
		}
	}
	for name, p := range map[string]*Result{"calm": calm.res, "storm": storm.res} {
		if p.Lost > 0 || p.Duplicates > 0 || p.OutOfOrder > 0 {
			notes = append(notes, fmt.Sprintf("FAILED: in the %s run the subscribers lost %d updates, got %d twice and %d out of order", name, p.Lost, p.Duplicates, p.OutOfOrder))
		}
	}
	if n := storm.res.Reconnects; n > 0 {
		notes = append(notes, fmt.Sprintf("%d subscriber streams were cut and reconnected during the storm", n))
	}

	r.Timeline = mon.Stop()
	r.Notes = slices.Concat(probe.notes, notes, r.Notes)
	for _, n := range calm.res.Notes {
		r.Notes = append(r.Notes, "calm: "+n)
	}
	return r, ctx.Err()
}

// stormFigures are the figures the storm follows, those b knows:
// goroutines, open descriptors (/proc, else process_open_fds), heap in
// use and RSS (/proc, else process_resident_memory_bytes).
func stormFigures(b serverSample) []*settleFigure {
	var out []*settleFigure
	if b.Goroutines >= 0 {
		out = append(out, newSettleFigure("server_goroutines", "count", "go_goroutines",
			func(s serverSample) float64 { return float64(s.Goroutines) }, b, float64(b.Goroutines+stormGoroutineSlack)))
	}
	if fds := b.openFDs(); fds > 0 {
		src := "/proc fd"
		if b.OpenFDs <= 0 {
			src = "process_open_fds"
		}
		out = append(out, newSettleFigure("server_open_fds", "count", src, serverSample.openFDs, b, fds+stormFDSlack))
	}
	if b.HeapBytes > 0 {
		out = append(out, newSettleFigure("server_heap_inuse", "bytes", "go_memstats_heap_inuse_bytes",
			func(s serverSample) float64 { return float64(s.HeapBytes) }, b, stormMemFactor*float64(b.HeapBytes)))
	}
	if rss := b.rss(); rss > 0 {
		src := "/proc VmRSS"
		if b.RSSBytes == 0 {
			src = "process_resident_memory_bytes"
		}
		out = append(out, newSettleFigure("server_rss", "bytes", src, serverSample.rss, b, stormMemFactor*rss))
	}
	return out
}

// awaited are the figures waitBack waits for.
func awaited(key string) bool { return key == "server_goroutines" || key == "server_open_fds" }

// gcSince reports whether the server ran a GC cycle after t, by
// go_memstats_last_gc_time_seconds.
func gcSince(s serverSample, t time.Time) bool {
	return s.LastGC > 0 && s.LastGC >= float64(t.UnixNano())/1e9
}

// waitBack samples the server every stormSampleEvery until its
// goroutines and open descriptors, those of figs, are back (and with heap,
// its heap in use too; the caller judges the heap only if a GC cycle ran
// after since: before, it holds the garbage of the storm), or deadline
// passes, and returns the last sample, whether they were back, and the
// last sampling error. Every figure sees every sample, and counts the
// time it took to come back from since. RSS is not waited for: the Go
// runtime returns memory to the system over minutes.
func waitBack(ctx context.Context, probe *serverProbe, figs []*settleFigure, heap bool, since, deadline time.Time) (serverSample, bool, error) {
	var last serverSample
	var lastErr error
	for {
		s, err := probe.sample(ctx)
		if err != nil {
			lastErr = err
		} else {
			last = s
			back := true
			for _, f := range figs {
				// The heap is waited for too: a hub that collects after a
				// crowd has gone (herald does, within seconds) is judged; one
				// that does not is reported as not judged at the deadline.
				wait := awaited(f.key) || heap && f.key == "server_heap_inuse"
				if !f.see(s, since) && wait {
					back = false
				}
			}
			if back {
				return last, true, lastErr
			}
		}
		next := time.Now().Add(stormSampleEvery)
		if next.After(deadline) || !sleepUntil(ctx, next) {
			return last, false, lastErr
		}
	}
}

// sampleWhile samples the server into peaks every stormSampleEvery until
// the returned stop is called; stop returns the number of failed samples.
func sampleWhile(ctx context.Context, probe *serverProbe, peaks *serverPeaks) (stop func() int) {
	if !probe.ok() {
		return func() int { return 0 }
	}
	done := make(chan struct{})
	failed := make(chan int, 1)
	go func() { // ends at stop, which waits for it
		n := 0
		defer func() { failed <- n }()
		t := time.NewTicker(stormSampleEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				<-done
				return
			case <-t.C:
				if s, err := probe.sample(ctx); err == nil {
					peaks.see(s)
				} else if ctx.Err() == nil {
					n++
				}
			}
		}
	}()
	return func() int {
		close(done)
		return <-failed
	}
}

// stormSummary is the storm's attempts in Result.Extra: the counts and,
// per outcome, the time it took.
type stormSummary struct {
	Conns   int     `json:"conns"`
	WindowS float64 `json:"window_s"`
	// Workers is the number of storm processes (0: this one).
	Workers int `json:"workers"`
	*StormResult
	AdmittedMs *latencyFigure `json:"admitted_ms,omitempty"` // to the response head
	ShedMs     *latencyFigure `json:"shed_ms,omitempty"`
	RefusedMs  *latencyFigure `json:"refused_ms,omitempty"`
	StatusMs   *latencyFigure `json:"status_ms,omitempty"`
}

func summarizeStorm(cfg Config, r *StormResult, workers int) *stormSummary {
	if r == nil {
		r = &StormResult{}
	}
	return &stormSummary{
		Conns: cfg.StormConns, WindowS: cfg.StormWindow.Seconds(), Workers: workers, StormResult: r,
		AdmittedMs: r.timing(outAdmitted), ShedMs: r.timing(outShed), RefusedMs: r.timing(outRefused), StatusMs: r.timing(outStatus),
	}
}

func (s *stormSummary) String() string {
	procs := "in this process"
	if s.Workers > 0 {
		procs = fmt.Sprintf("from %d process%s", s.Workers, plural(s.Workers, "es"))
	}
	timing := func(l *latencyFigure) string {
		if l == nil {
			return ""
		}
		return fmt.Sprintf(" (p50 %s, p99 %s ms)", msStr(l.P50), msStr(l.P99))
	}
	out := fmt.Sprintf("%s attempts over %.1f s %s, %s started (the last at %.2f s): %s admitted%s, %s shed%s, %s refused%s",
		num(float64(s.Attempts)), s.WindowS, procs, num(float64(s.Started)), s.LastStartS,
		num(float64(s.Admitted)), timing(s.AdmittedMs), num(float64(s.Shed)), timing(s.ShedMs), num(float64(s.Refused)), timing(s.RefusedMs))
	if len(s.RefusedBy) > 0 {
		out += " [" + countsStr(s.RefusedBy) + "]"
	}
	if len(s.Status) > 0 {
		out += fmt.Sprintf(", answered %s%s", countsStr(s.Status), timing(s.StatusMs))
	}
	if s.EndedAtOnce > 0 {
		out += fmt.Sprintf(", %s streams ended at once without a retry field", num(float64(s.EndedAtOnce)))
	}
	out += fmt.Sprintf("; %s pending at the window's end, %s admitted streams dropped by the hub", num(float64(s.PendingAtWindowEnd)), num(float64(s.Dropped)))
	if s.NotStarted > 0 {
		out += fmt.Sprintf("; %s not started", num(float64(s.NotStarted)))
	}
	if s.LocalErrors > 0 {
		out += fmt.Sprintf("; %s failed on this side", num(float64(s.LocalErrors)))
	}
	return out
}

// notes are what the reader must not miss about the storm.
func (s *stormSummary) notes() []string {
	var out []string
	if s.NotStarted > 0 {
		out = append(out, fmt.Sprintf("%d storm attempts were not started: no descriptor was free before the window ended (--storm-workers)", s.NotStarted))
	}
	if s.LocalErrors > 0 {
		why := ""
		if len(s.Errors) > 0 {
			why = ": " + s.Errors[0]
		}
		out = append(out, fmt.Sprintf("%d storm attempts failed on this side (source ports or descriptors)%s", s.LocalErrors, why))
	}
	if s.Dropped > 0 {
		out = append(out, fmt.Sprintf("the hub ended %d admitted storm streams before the storm did", s.Dropped))
	}
	if s.RefusedMs != nil && s.RefusedMs.P99 > 1000 {
		out = append(out, fmt.Sprintf("refusals were slow (p99 %s ms): attempts waited in the kernel's queues or went unanswered", msStr(s.RefusedMs.P99)))
	}
	return out
}

func countsStr(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %s", k, num(float64(m[k]))))
	}
	return strings.Join(parts, ", ")
}

// counterFigure is one watched series of the hub before and after the
// storm run.
type counterFigure struct {
	Before float64 `json:"before"`
	After  float64 `json:"after"`
	Delta  float64 `json:"delta"`
}

// hubCounters are the hub's watched series (watchedWords), by name and
// labels.
type hubCounters map[string]counterFigure

// watchedDelta pairs the watched series of two samples; a series absent
// before counts from 0.
func watchedDelta(before, after map[string]float64) hubCounters {
	if len(after) == 0 {
		return nil
	}
	out := make(hubCounters, len(after))
	for k, v := range after {
		out[k] = counterFigure{Before: before[k], After: v, Delta: v - before[k]}
	}
	return out
}

func (c hubCounters) String() string {
	var moved []string
	still := 0
	for _, k := range slices.Sorted(maps.Keys(c)) {
		f := c[k]
		if f.Delta == 0 {
			still++
			continue
		}
		moved = append(moved, fmt.Sprintf("%s %+g (now %g)", k, f.Delta, f.After))
	}
	out := strings.Join(moved, ", ")
	if out == "" {
		out = "none moved"
	}
	if still > 0 {
		out += fmt.Sprintf("; %d others unchanged", still)
	}
	return out
}

// notes point out failed accepts: a hub that ran out of descriptors.
func (c hubCounters) notes() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if f := c[k]; strings.Contains(k, "accept_errors") && f.Delta > 0 {
			out = append(out, fmt.Sprintf("the hub failed %g accepts during the storm (%s): out of descriptors?", f.Delta, k))
		}
	}
	return out
}

// listenCounters are the kernel's counts of connections its listen
// queues dropped, for the whole network namespace (TcpExt in
// /proc/net/netstat, Linux): a hub on loopback shares this process's.
type listenCounters struct {
	Overflows int64 `json:"listen_overflows"` // an accept queue was full
	Drops     int64 `json:"listen_drops"`     // dropped for any reason, overflows included
}

func (c listenCounters) since(b listenCounters) listenCounters {
	return listenCounters{Overflows: c.Overflows - b.Overflows, Drops: c.Drops - b.Drops}
}

func (c listenCounters) String() string {
	return fmt.Sprintf("%s listen-queue overflows, %s drops during the storm run (TcpExt, every socket of this network namespace)", num(float64(c.Overflows)), num(float64(c.Drops)))
}

func readListenCounters() (listenCounters, error) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return listenCounters{}, err
	}
	return parseListenCounters(b)
}

// parseListenCounters reads ListenOverflows and ListenDrops from the
// TcpExt lines of /proc/net/netstat: one line of names, one of values.
func parseListenCounters(b []byte) (listenCounters, error) {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		vals := f[1:]
		if len(vals) != len(names) {
			return listenCounters{}, errors.New("netstat: TcpExt names and values differ in number")
		}
		var c listenCounters
		found := 0
		for i, n := range names {
			var dst *int64
			switch n {
			case "ListenOverflows":
				dst = &c.Overflows
			case "ListenDrops":
				dst = &c.Drops
			default:
				continue
			}
			v, err := strconv.ParseInt(vals[i], 10, 64)
			if err != nil {
				return listenCounters{}, fmt.Errorf("netstat %s: %w", n, err)
			}
			*dst = v
			found++
		}
		if found != 2 {
			return listenCounters{}, errors.New("netstat: no ListenOverflows or ListenDrops")
		}
		return c, nil
	}
	if err := sc.Err(); err != nil {
		return listenCounters{}, err
	}
	return listenCounters{}, errors.New("netstat: no TcpExt lines")
}
