package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-hub/herald/sse"
)

// slowQuiet is how long a slow reader, drained at the end of a run, waits
// for more data before it concludes its stream is still open.
const slowQuiet = time.Second

// slowCheckMax bounds the drain of all slow readers at the end of a run.
const slowCheckMax = 30 * time.Second

func init() {
	Register(Scenario{
		Name:    "slow",
		Summary: "fanout with --slow-fraction of the subscribers stalled or slow, beside the same run with all of them reading and the run without them: the prompt ones' latency and loss, and what the hub did with the slow ones",
		Defaults: func(c *Config) {
			setDefault(&c.Publishers, 4)
			setDefault(&c.SlowFraction, 0.1)
			setDefault(&c.SlowDelay, 100*time.Millisecond)
			if c.SlowMode == "" {
				c.SlowMode = "stall"
			}
		},
		Budget: func(c *Config) time.Duration {
			return 3*(c.ConnectTimeout+c.Duration+c.Drain+30*time.Second) + 2*slowCheckMax + 30*time.Second
		},
		Run: runSlow,
	})
}

// runSlow runs the same fanout three times. Of Cfg.Subscribers, a
// fraction Cfg.SlowFraction are slow and the rest prompt. The first run
// has the prompt subscribers alone; the second has them and the others
// too, all reading promptly; the third is the same with the others slow.
// The second and third differ only by the slow readers' pace, so their
// ratio is what slowness costs the prompt ones (p99_ratio); the first
// shows what the extra connections cost on their own. The Result is the
// third run's, for the prompt subscribers; Extra sets the three side by
// side and says what became of the slow readers.
//
// The slow readers are raw HTTP/1.1 connections in this process, not
// client subscriptions: the client reads the socket into its event buffer
// and reconnects by itself, so a stalled client would neither stall the
// socket at once nor notice that the hub hung up on it. A raw reader in
// "stall" mode reads nothing after the response head; in "slow" mode it
// reads one event per Cfg.SlowDelay. When the run is over, each is
// drained: a stream the hub ended shows its end (EOF or reset) once its
// buffered bytes are read, one still open goes quiet.
func runSlow(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	if cfg.SlowMode != "stall" && cfg.SlowMode != "slow" {
		return nil, fmt.Errorf("--slow-mode %q: stall or slow", cfg.SlowMode)
	}
	if cfg.SlowFraction >= 1 {
		return nil, fmt.Errorf("--slow-fraction %g leaves no prompt subscriber", cfg.SlowFraction)
	}
	nSlow := max(int(math.Round(float64(cfg.Subscribers)*cfg.SlowFraction)), 1)
	nPrompt := cfg.Subscribers - nSlow
	if nPrompt < 1 {
		return nil, fmt.Errorf("--subscribers %d with --slow-fraction %g leaves no prompt subscriber", cfg.Subscribers, cfg.SlowFraction)
	}
	if e.FDLimit > 0 && nSlow > int(e.FDLimit)-2*fdReserve {
		return nil, fmt.Errorf("%d slow readers do not fit this process's open-files limit %d", nSlow, e.FDLimit)
	}
	probe, err := e.newServerProbe(ctx)
	if err != nil {
		return nil, err
	}
	defer probe.close()

	var cur passCounters
	mon := e.StartMonitor("slow", cur.counters)
	defer mon.Stop()

	alone, err := slowPass(ctx, e, mon, &cur, probe, "alone", nPrompt, crowd{})
	if err != nil {
		return nil, fmt.Errorf("run without slow readers: %w", err)
	}
	if ctx.Err() != nil {
		alone.res.Timeline = mon.Stop()
		return alone.res, ctx.Err()
	}
	reading, err := slowPass(ctx, e, mon, &cur, probe, "reading", nPrompt, crowd{n: nSlow, readAll: true})
	if err != nil {
		return nil, fmt.Errorf("run with every subscriber reading: %w", err)
	}
	if ctx.Err() != nil {
		reading.res.Timeline = mon.Stop()
		return reading.res, ctx.Err()
	}
	with, err := slowPass(ctx, e, mon, &cur, probe, "with", nPrompt, crowd{n: nSlow})
	if err != nil {
		return nil, fmt.Errorf("run with slow readers: %w", err)
	}
	r := with.res
	r.Timeline = mon.Stop()
	r.Extra = map[string]any{
		"prompt_alone":       summarizePass(alone.res),
		"prompt_all_reading": summarizePass(reading.res),
		"prompt_with_slow":   summarizePass(with.res),
	}
	r.Subscribers = nPrompt + nSlow
	r.Notes = slices.Concat(probe.notes, r.Notes)
	for _, n := range alone.res.Notes {
		r.Notes = append(r.Notes, "without slow readers: "+n)
	}
	for _, n := range reading.res.Notes {
		r.Notes = append(r.Notes, "with every subscriber reading: "+n)
	}
	if a := reading.res.Latency.P99; a > 0 {
		q := ratio(with.res.Latency.P99 / a)
		r.Extra["p99_ratio"] = q
		if q > 1.2 {
			r.Notes = append(r.Notes, fmt.Sprintf("the prompt subscribers' P99 is %.2f× what it is when the slow readers read promptly", float64(q)))
		}
	}
	if a := alone.res.Latency.P99; a > 0 {
		r.Extra["p99_ratio_vs_alone"] = ratio(with.res.Latency.P99 / a)
	}
	sum := with.slow
	r.Extra["slow_readers"] = sum
	if !with.s0.At.IsZero() && !with.end.At.IsZero() && with.s0.SlowDisconnects >= 0 && with.end.SlowDisconnects >= 0 {
		r.Extra["hub_slow_disconnects"] = with.end.SlowDisconnects - with.s0.SlowDisconnects
	}
	if cost := slowCost(reading, with, sum.Subscribers-sum.ConnectErrors); cost != nil {
		r.Extra["server_cost_per_slow"] = cost
	}
	if with.res.Lost > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("prompt subscribers lost %d updates beside the slow readers", with.res.Lost))
	}
	return r, ctx.Err()
}

// slowPassState is what the monitor reads of the pass under way.
type slowPassState struct {
	fleet     Fleet
	published *atomic.Int64
	slow      *slowGroup
	storm     *stormRun
}

// passCounters is what the monitor shows of the pass under way, if any:
// the prompt fleet's figures with the crowd's connections counted in.
type passCounters struct{ atomic.Pointer[slowPassState] }

func (pc *passCounters) counters() Counters {
	p := pc.Load()
	if p == nil {
		return Counters{}
	}
	st := p.fleet.Stats()
	c := Counters{Open: st.Open, Delivered: st.Delivered, Published: p.published.Load(), P99: time.Duration(st.P99Us) * time.Microsecond}
	if p.slow != nil {
		c.Open += p.slow.open.Load()
	}
	if p.storm != nil {
		c.Open += p.storm.counts().Open
	}
	return c
}

// slowPassOut is one pass: the prompt subscribers' result, server samples
// when publishing began and ended and after the slow readers were
// drained, the slow readers' fate, and the storm's.
type slowPassOut struct {
	res          *Result
	s0, s1, end  serverSample
	slow         *slowSummary
	storm        *StormResult
	stormWorkers int
}

// crowd is what a pass opens beside its prompt subscribers: n raw
// connections that read as Cfg.SlowMode says, or promptly when readAll,
// each subscribed to a topic of the pass or, when patterns is set, to the
// URL patterns it gives for connection i instead; and, with storm, a
// connection storm (Cfg.StormConns) a quarter into publishing.
type crowd struct {
	n         int
	readAll   bool
	patterns  func(i int) []string
	refusable bool // the hub may refuse every one of them
	storm     bool
}

// slowPass opens the crowd, then nPrompt prompt subscribers (a fleet, in
// workers as it decides), publishes for Cfg.Duration, waits for the prompt
// deliveries, counts, and drains the crowd.
func slowPass(ctx context.Context, e *Env, mon *Monitor, cur *passCounters, probe *serverProbe, name string, nPrompt int, c crowd) (*slowPassOut, error) {
	cfg := e.Cfg
	topics := e.Topics("slow-"+name, cfg.Topics)
	out := &slowPassOut{}
	state := &slowPassState{published: new(atomic.Int64)}
	if c.n > 0 {
		mon.SetPhase(name + ": connecting slow readers")
		state.slow = openSlowGroup(ctx, e, topics, c)
		defer state.slow.close()
		if state.slow.open.Load() == 0 && !c.refusable {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("no slow reader could connect: %s", state.slow.firstErr)
		}
	}
	if c.storm {
		mon.SetPhase(name + ": starting the storm's workers")
		st, err := startStorm(ctx, e, e.Topic("storm-quiet", 0))
		if err != nil {
			return nil, fmt.Errorf("prepare the storm: %w", err)
		}
		defer st.close()
		state.storm = st
		out.stormWorkers = st.workers
	}
	fleet := e.NewFleet(FleetSpec{Subscribers: nPrompt, Topics: topics})
	defer fleet.Close()
	state.fleet = fleet
	cur.Store(state)

	mon.SetPhase(name + ": connecting")
	if err := fleet.Open(ctx); err != nil {
		return nil, fmt.Errorf("open subscribers: %w", err)
	}
	opened := fleet.Stats()
	if probe.ok() {
		out.s0, _ = probe.sample(ctx)
	}

	mon.SetPhase(name + ": publishing")
	if state.slow != nil {
		state.slow.start()
	}
	fleet.Start()
	start := time.Now()
	if state.storm != nil {
		state.storm.startAt(ctx, start.Add(cfg.Duration/4), func() { mon.SetPhase(name + ": storming") })
	}
	pub := publish(ctx, e.publishers(), pacing{
		Publishers: cfg.Publishers,
		Rate:       cfg.Rate,
		Duration:   cfg.Duration,
		Topics:     topics,
		Payload:    cfg.Payload,
	}, state.published)
	if probe.ok() {
		out.s1, _ = probe.sample(ctx)
	}
	if state.storm != nil {
		// The storm's streams are held while publishing goes on, no longer.
		mon.SetPhase(name + ": ending the storm")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		res, err := state.storm.finish(sctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("collect the storm: %w", err)
		}
		out.storm = res
	}

	mon.SetPhase(name + ": draining")
	var expected int64
	for _, sl := range pub.Log.Streams {
		if sl.Stream.Topic < len(opened.OpenByTopic) {
			expected += (int64(sl.Last) - int64(len(sl.Failed))) * opened.OpenByTopic[sl.Stream.Topic]
		}
	}
	drainStart := time.Now()
	for ctx.Err() == nil && time.Since(drainStart) < cfg.Drain && fleet.Stats().Unique < expected {
		sleepFor(ctx, 10*time.Millisecond)
	}
	drained := time.Since(drainStart)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
	defer cancel()
	fr, err := fleet.Finish(fctx, pub.Log)
	if err != nil {
		return nil, fmt.Errorf("collect subscribers: %w", err)
	}
	if state.slow != nil {
		mon.SetPhase(name + ": checking slow readers")
		out.slow = state.slow.check(cfg)
	}
	if probe.ok() {
		out.end, _ = probe.sample(ctx)
	}

	r := deliveryResult(cfg, cfg.Rate, nPrompt, start, drained, pub, fr, opened)
	if cfg.Rate > 0 && r.PublishesPerS < 0.95*cfg.Rate && ctx.Err() == nil {
		r.Notes = append(r.Notes, fmt.Sprintf("publishers reached %.0f/s of the %.0f/s asked", r.PublishesPerS, cfg.Rate))
	}
	if opened.Opened < int64(nPrompt) {
		r.Notes = append(r.Notes, fmt.Sprintf("only %d of %d prompt subscribers connected", opened.Opened, nPrompt))
	}
	if pub.Published == 0 && pub.FirstErr != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("no publish succeeded: %w", pub.FirstErr)
	}
	out.res = r
	return out, nil
}

// slowGroup is a pass's slow readers.
type slowGroup struct {
	stall    bool
	delay    time.Duration
	readers  []*slowReader
	open     atomic.Int64
	connErrs int
	firstErr string
	refused  map[int]int // connections the hub refused, by status

	drainCh   chan struct{} // closed when the run is over: drain
	abort     chan struct{} // closed to end the readers now
	abortOnce sync.Once
	started   bool
	wg        sync.WaitGroup
}

type slowReader struct {
	rc *rawConn
	// events read during the run, and when drained at its end.
	events, drained atomic.Int64
	// fate, once the reader ended: ended by the hub during the run or
	// found ended when drained, still open, or unknown (cut short).
	fate atomic.Int32
}

const (
	fateUnknown = iota
	fateEndedDuring
	fateEndedFound
	fateOpen
)

// openSlowGroup opens n raw subscriptions over topics,
// Cfg.ConnectConcurrency at a time, within Cfg.ConnectTimeout. They read
// as Cfg.SlowMode says, or promptly when prompt is set.
func openSlowGroup(ctx context.Context, e *Env, topics []string, c crowd) *slowGroup {
	cfg := e.Cfg
	n := c.n
	g := &slowGroup{
		stall: cfg.SlowMode == "stall", delay: cfg.SlowDelay,
		drainCh: make(chan struct{}), abort: make(chan struct{}),
		refused: make(map[int]int),
	}
	if c.readAll {
		g.stall, g.delay = false, 0
	}
	octx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var mu sync.Mutex
	sem := make(chan struct{}, cfg.ConnectConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-octx.Done():
		}
		if octx.Err() != nil {
			mu.Lock()
			g.connErrs += n - i
			mu.Unlock()
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, ccancel := context.WithTimeout(octx, churnConnectTimeout)
			defer ccancel()
			// A crowd with patterns subscribes to them alone: it costs
			// the hub its patterns, not deliveries it would not read.
			topic, patterns := topics[i%len(topics)], []string(nil)
			if c.patterns != nil {
				topic, patterns = "", c.patterns(i)
			}
			rc, err := e.rawSubscribe(cctx, topic, patterns)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				g.connErrs++
				if se, ok := errors.AsType[*statusError](err); ok {
					g.refused[se.code]++
				}
				if g.firstErr == "" {
					g.firstErr = err.Error()
				}
				return
			}
			g.readers = append(g.readers, &slowReader{rc: rc})
			g.open.Add(1)
		})
	}
	wg.Wait()
	return g
}

// start starts the readers: slow ones read at their pace, stalled ones
// wait for the drain.
func (g *slowGroup) start() {
	g.started = true
	for _, s := range g.readers {
		g.wg.Go(func() { g.read(s) })
	}
}

func (g *slowGroup) read(s *slowReader) {
	defer g.open.Add(-1)
	if g.stall {
		select {
		case <-g.drainCh:
		case <-g.abort:
			return
		}
	}
	r := sse.NewReader(s.rc.body())
	pause := time.NewTimer(time.Hour)
	pause.Stop()
	defer pause.Stop()
	for {
		_, err := r.Next()
		draining := closed(g.drainCh)
		if err != nil {
			switch {
			case closed(g.abort):
			case errors.Is(err, os.ErrDeadlineExceeded) && draining:
				s.fate.Store(fateOpen)
			case draining:
				s.fate.Store(fateEndedFound)
			default:
				s.fate.Store(fateEndedDuring)
			}
			return
		}
		if draining {
			s.drained.Add(1)
			continue
		}
		s.events.Add(1)
		if g.delay <= 0 {
			continue
		}
		pause.Reset(g.delay)
		select {
		case <-pause.C:
		case <-g.drainCh:
		case <-g.abort:
			return
		}
	}
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// check drains every reader (at most slowCheckMax in all) and sums up.
func (g *slowGroup) check(cfg Config) *slowSummary {
	if !g.started {
		g.start()
	}
	close(g.drainCh)
	for _, s := range g.readers {
		s.rc.drain(slowQuiet)
	}
	done := make(chan struct{})
	go func() { // ends when every reader has: drained, or aborted below
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(slowCheckMax):
		g.close()
		<-done
	}
	sum := &slowSummary{Mode: cfg.SlowMode, Subscribers: len(g.readers) + g.connErrs, ConnectErrors: g.connErrs, FirstError: g.firstErr}
	for code, n := range g.refused {
		if sum.Refused == nil {
			sum.Refused = make(map[string]int)
		}
		sum.Refused[fmt.Sprint(code)] = n
	}
	if !g.stall {
		sum.DelayMs = float64(cfg.SlowDelay) / float64(time.Millisecond)
	}
	for _, s := range g.readers {
		switch s.fate.Load() {
		case fateEndedDuring:
			sum.EndedDuringRun++
		case fateEndedFound:
			sum.EndedFoundAtEnd++
		case fateOpen:
			sum.StillOpen++
		default:
			sum.Unknown++
		}
		sum.EventsRead += s.events.Load()
		sum.EventsDrained += s.drained.Load()
		sum.BytesRead += s.rc.read.Load()
	}
	sum.Disconnected = sum.EndedDuringRun + sum.EndedFoundAtEnd
	return sum
}

// close ends the readers and closes their connections.
func (g *slowGroup) close() {
	g.abortOnce.Do(func() {
		close(g.abort)
		for _, s := range g.readers {
			s.rc.close()
		}
	})
	g.wg.Wait()
}

// slowSummary is what became of the slow readers of a run.
type slowSummary struct {
	Mode          string  `json:"mode"` // stall or slow
	DelayMs       float64 `json:"delay_ms,omitempty"`
	Subscribers   int     `json:"subscribers"`
	ConnectErrors int     `json:"connect_errors"`
	FirstError    string  `json:"first_error,omitempty"`
	// Refused counts the subscriptions the hub answered with an error
	// status, by status code.
	Refused map[string]int `json:"refused,omitempty"`
	// Disconnected counts the streams the hub ended: seen ending during
	// the run (slow mode), or found ended when drained after it.
	Disconnected    int `json:"disconnected"`
	EndedDuringRun  int `json:"ended_during_run"`
	EndedFoundAtEnd int `json:"ended_found_at_end"`
	StillOpen       int `json:"still_open"`
	Unknown         int `json:"unknown,omitempty"` // the drain was cut short
	// EventsRead were read during the run, EventsDrained after it;
	// BytesRead counts both.
	EventsRead    int64 `json:"events_read"`
	EventsDrained int64 `json:"events_drained"`
	BytesRead     int64 `json:"bytes_read"`
}

func (s *slowSummary) String() string {
	how := "stalled (never read)"
	if s.Mode == "slow" {
		how = fmt.Sprintf("slow (one event per %s ms)", msStr(s.DelayMs))
	}
	out := fmt.Sprintf("%d %s: the hub disconnected %d (%d seen during the run, %d found at the end), %d still connected",
		s.Subscribers-s.ConnectErrors, how, s.Disconnected, s.EndedDuringRun, s.EndedFoundAtEnd, s.StillOpen)
	if s.Unknown > 0 {
		out += fmt.Sprintf(", %d unknown", s.Unknown)
	}
	out += fmt.Sprintf("; %s events read during the run, %s drained after it (%s)", num(float64(s.EventsRead)), num(float64(s.EventsDrained)), bytesStr(float64(s.BytesRead)))
	if s.ConnectErrors > 0 {
		out += fmt.Sprintf("; %d failed to connect: %s", s.ConnectErrors, s.FirstError)
	}
	return out
}

// passSummary is one pass's prompt subscribers in Result.Extra.
type passSummary struct {
	Subscribers int         `json:"subscribers"`
	Latency     Percentiles `json:"latency_ms"`
	Delivered   int64       `json:"delivered"`
	Expected    int64       `json:"expected"`
	Lost        int64       `json:"lost"`
	Duplicates  int64       `json:"duplicates"`
	OutOfOrder  int64       `json:"out_of_order"`
	Reconnects  int64       `json:"reconnects"`
}

func summarizePass(r *Result) *passSummary {
	return &passSummary{
		Subscribers: r.Subscribers, Latency: r.Latency, Delivered: r.Delivered, Expected: r.Expected,
		Lost: r.Lost, Duplicates: r.Duplicates, OutOfOrder: r.OutOfOrder, Reconnects: r.Reconnects,
	}
}

func (p *passSummary) String() string {
	return fmt.Sprintf("%s; %d subscribers, delivered %s of %s, lost %d, duplicates %d, out of order %d, reconnects %d",
		pcts(p.Latency), p.Subscribers, num(float64(p.Delivered)), num(float64(p.Expected)), p.Lost, p.Duplicates, p.OutOfOrder, p.Reconnects)
}

// ratio is a ratio of two figures, shown as such.
type ratio float64

func (q ratio) String() string { return fmt.Sprintf("%.2f×", float64(q)) }

// slowCostFigure is what the slow readers cost the server beyond their
// connections. PerSlowKB is an upper bound: all of the server's RSS growth
// while publishing with them, counted against them (the run without them
// grows too, from its own activity; its memory is reused by the second
// run, so a difference of the two would not mean much). QueuedPerSlowKB
// is what the hub's queues held for them when publishing ended.
// slowCostFigure is what the slow readers cost the server: its RSS when
// publishing ended with them stalled, against the same moment of the run
// where they read promptly (the same connections, the same updates).
type slowCostFigure struct {
	PerSlowKB       float64 `json:"rss_per_slow_kb_at_most"` // -1: unknown
	WithMB          float64 `json:"rss_with_slow_mb"`
	ReadingMB       float64 `json:"rss_all_reading_mb"`
	QueuedPerSlowKB float64 `json:"queued_per_slow_kb"` // herald_queue_bytes; -1: unknown
}

func slowCost(reading, with *slowPassOut, n int) *slowCostFigure {
	if n <= 0 {
		return nil
	}
	c := &slowCostFigure{PerSlowKB: -1, QueuedPerSlowKB: -1}
	known := false
	if reading.s1.RSSBytes > 0 && with.s1.RSSBytes > 0 {
		w, r := float64(with.s1.RSSBytes), float64(reading.s1.RSSBytes)
		c.WithMB, c.ReadingMB = w/(1<<20), r/(1<<20)
		c.PerSlowKB = max(w-r, 0) / float64(n) / 1024
		known = true
	}
	if with.s1.QueueBytes >= 0 && !with.s1.At.IsZero() {
		c.QueuedPerSlowKB = with.s1.QueueBytes / float64(n) / 1024
		known = true
	}
	if !known {
		return nil
	}
	return c
}

func (c *slowCostFigure) String() string {
	var s string
	if c.PerSlowKB != -1 {
		s = fmt.Sprintf("RSS at most %.1f KB per slow reader (%.1f MB when publishing ended with them, %.1f MB with them reading)", c.PerSlowKB, c.WithMB, c.ReadingMB)
	}
	if c.QueuedPerSlowKB >= 0 {
		if s != "" {
			s += "; "
		}
		s += fmt.Sprintf("hub queues held %.1f KB per slow reader when publishing ended", c.QueuedPerSlowKB)
	}
	return s
}
