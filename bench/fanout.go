package bench

import (
	"context"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"
)

func init() {
	Register(Scenario{
		Name:    "fanout",
		Summary: "N subscribers over K topics, publishers at rate R: publish→deliver latency, loss, order (--find-max ramps R)",
		Defaults: func(c *Config) {
			// Each publisher waits for one answer before its next publish,
			// so that its updates reach the hub in order; four keep the rate
			// when a loaded hub answers in tens of milliseconds.
			setDefault(&c.Publishers, 4)
			if c.FindMax {
				setDefault(&c.Duration, 5*time.Second) // per step
			}
		},
		Budget: func(c *Config) time.Duration {
			one := c.ConnectTimeout + c.Duration + c.Drain + 30*time.Second
			if c.FindMax {
				return time.Duration(c.MaxSteps) * one
			}
			return one
		},
		Run: func(ctx context.Context, e *Env) (*Result, error) {
			if e.Cfg.FindMax {
				return findMax(ctx, e)
			}
			return fanoutOnce(ctx, e, e.Cfg.Rate, "fanout")
		},
	})
}

// fanoutOnce runs one fanout at rate: open the subscribers, publish for
// Cfg.Duration once all are connected, wait until every delivery arrived
// or Cfg.Drain passed, and count.
func fanoutOnce(ctx context.Context, e *Env, rate float64, name string) (*Result, error) {
	cfg := e.Cfg
	topics := e.Topics(name, cfg.Topics)
	fleet := e.NewFleet(FleetSpec{Subscribers: cfg.Subscribers, Topics: topics, URLPatterns: sharedPatterns(cfg.Patterns)})
	defer fleet.Close()
	var published atomic.Int64
	mon := e.StartMonitor(name, func() Counters {
		st := fleet.Stats()
		return Counters{Open: st.Open, Delivered: st.Delivered, Published: published.Load(), P99: time.Duration(st.P99Us) * time.Microsecond}
	})
	defer mon.Stop()

	mon.SetPhase("connecting")
	if err := fleet.Open(ctx); err != nil {
		return nil, fmt.Errorf("open subscribers: %w", err)
	}
	opened := fleet.Stats()

	mon.SetPhase("publishing")
	cpu := startServerCPU(ctx, cfg.ServerPID)
	fleet.Start()
	start := time.Now()
	out := publish(ctx, e.publishers(), pacing{
		Publishers: cfg.Publishers,
		Rate:       rate,
		Duration:   cfg.Duration,
		Topics:     topics,
		Payload:    cfg.Payload,
	}, &published)
	// Read the hub's write delay while the drain below runs: it is only
	// meaningful while updates still flow, and must not delay the drain.
	type delaySample struct {
		seconds float64
		ok      bool
	}
	delayc := make(chan delaySample, 1)
	go func() {
		d, ok := sampleWriteDelay(ctx, cfg)
		delayc <- delaySample{d, ok}
	}()

	// Drain: wait for what is still on its way, no longer than Drain.
	mon.SetPhase("draining")
	var expected int64
	for _, sl := range out.Log.Streams {
		if sl.Stream.Topic < len(opened.OpenByTopic) {
			expected += (int64(sl.Last) - int64(len(sl.Failed))) * opened.OpenByTopic[sl.Stream.Topic]
		}
	}
	drainStart := time.Now()
	drainUntil := drainStart.Add(cfg.Drain)
	poll := time.NewTicker(10 * time.Millisecond)
	for ctx.Err() == nil && time.Now().Before(drainUntil) && fleet.Stats().Unique < expected {
		select {
		case <-ctx.Done():
		case <-poll.C:
		}
	}
	poll.Stop()
	drained := time.Since(drainStart)
	serverCPU := cpu.stop(ctx)
	delay := <-delayc // bounded: sampleWriteDelay gives up after 2 s

	// Count even when interrupted: what arrived so far is still worth showing.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 90*time.Second)
	defer cancel()
	fr, err := fleet.Finish(fctx, out.Log)
	timeline := mon.Stop()
	if err != nil {
		return nil, fmt.Errorf("collect subscribers: %w", err)
	}

	r := deliveryResult(cfg, rate, cfg.Subscribers, start, drained, out, fr, opened)
	r.Timeline = timeline
	serverCPU.report(r, fr.Stats.Delivered, "delivery")
	if delay.ok {
		if r.Extra == nil {
			r.Extra = map[string]any{}
		}
		r.Extra["server_write_delay_ms"] = round2(delay.seconds * 1000)
	}
	if rate > 0 && r.PublishesPerS < 0.95*rate && ctx.Err() == nil {
		r.Notes = append(r.Notes, fmt.Sprintf("publishers reached %.0f/s of the %.0f/s asked: the hub (or this machine) could not take more; add --publishers", r.PublishesPerS, rate))
	}
	if opened.Opened < int64(cfg.Subscribers) {
		r.Notes = append(r.Notes, fmt.Sprintf("only %d of %d subscribers connected", opened.Opened, cfg.Subscribers))
	}
	if out.Published == 0 && out.FirstErr != nil && ctx.Err() == nil {
		return r, fmt.Errorf("no publish succeeded: %w", out.FirstErr)
	}
	return r, ctx.Err()
}

// sampleWriteDelay reads the write delay herald had in force as the
// publishers finished (herald_write_delay_seconds): it tells a run with
// writes paced by load from one without. Another hub, or metrics that are
// off or elsewhere without --metrics-url, leave it unknown.
func sampleWriteDelay(ctx context.Context, cfg Config) (seconds float64, ok bool) {
	mu := cfg.MetricsURL
	if mu == "off" || ctx.Err() != nil {
		return 0, false
	}
	if mu == "" {
		var err error
		if mu, err = defaultMetricsURL(cfg.firstHub()); err != nil {
			return 0, false
		}
	} else if u, err := url.Parse(mu); err != nil || (!cfg.AllowRemote && requireLoopback(ctx, u.Hostname()) != nil) {
		return 0, false
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := SampleServer(sctx, 0, mu)
	if err != nil || st.WriteDelay < 0 {
		return 0, false
	}
	return st.WriteDelay, true
}

func ptr[T any](v T) *T { return &v }

// findMax ramps the rate by RampFactor per step, each step a short fanout
// with fresh subscribers and topics, until P99 exceeds the bound, anything
// is lost, duplicated or reordered, or the publishers cannot keep the rate.
// The Result is the last step that passed, with every step listed.
func findMax(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	bound := float64(cfg.P99Bound) / float64(time.Millisecond)
	var steps []Step
	var best, last *Result
	rate := cfg.Rate
	var err error
	for i := 0; i < cfg.MaxSteps && ctx.Err() == nil; i++ {
		var r *Result
		r, err = fanoutOnce(ctx, e, rate, fmt.Sprintf("fanout-step%d", i))
		if r == nil {
			break
		}
		last = r
		st := Step{
			Rate: rate, PublishesPerS: r.PublishesPerS, DeliveriesPerS: r.DeliveriesPerS,
			P99Ms: r.Latency.P99, Lost: r.Lost, Duplicates: r.Duplicates, OutOfOrder: r.OutOfOrder,
		}
		switch {
		case err != nil:
			st.Why = "interrupted"
		case r.Lost > 0 || r.Duplicates > 0 || r.OutOfOrder > 0:
			st.Why = "deliveries lost, duplicated or out of order"
		case r.Latency.P99 > bound:
			st.Why = fmt.Sprintf("p99 %.1f ms over %.1f ms", r.Latency.P99, bound)
		case r.PublishErrors > 0:
			st.Why = "publish errors"
		case r.PublishesPerS < 0.95*rate:
			st.Why = fmt.Sprintf("publishers reached only %.0f/s", r.PublishesPerS)
		default:
			st.OK = true
		}
		steps = append(steps, st)
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "\r\033[Kstep %d: rate %.0f/s p99 %.1f ms lost %d %s\n", i, rate, r.Latency.P99, r.Lost, okWord(st))
		}
		if !st.OK {
			break
		}
		best = r
		rate *= cfg.RampFactor
	}
	res := best
	if res == nil {
		res = last
	}
	if res == nil {
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	res.Steps = steps
	res.P99BoundMs = bound
	if best != nil {
		res.MaxRate = best.Rate
	}
	if len(steps) == cfg.MaxSteps && steps[len(steps)-1].OK {
		res.Notes = append(res.Notes, "every step passed: the maximum is higher; raise --max-steps or --rate")
	}
	return res, err
}

func okWord(s Step) string {
	if s.OK {
		return "ok"
	}
	return "FAIL: " + s.Why
}

// serverCPU measures the CPU time a server process (--server-pid) spends
// during a measured phase, so that cost per delivery or per publish can be
// compared between hubs. A zero pid measures nothing.
type serverCPU struct {
	pid   int
	start time.Time
	cpu0  float64
	ok    bool
	secs  float64
	wall  time.Duration
}

func startServerCPU(ctx context.Context, pid int) *serverCPU {
	c := &serverCPU{pid: pid, start: time.Now()}
	if pid <= 0 {
		return c
	}
	if st, err := SampleServer(ctx, pid, ""); err == nil {
		c.cpu0, c.ok = st.CPUSeconds, true
	}
	return c
}

func (c *serverCPU) stop(ctx context.Context) *serverCPU {
	c.wall = time.Since(c.start)
	if !c.ok {
		return c
	}
	st, err := SampleServer(context.WithoutCancel(ctx), c.pid, "")
	if err != nil {
		c.ok = false
		return c
	}
	c.secs = st.CPUSeconds - c.cpu0
	return c
}

// report adds server_cpu_s, server_cpu_percent and
// server_cpu_us_per_<unit> to r.Extra.
func (c *serverCPU) report(r *Result, n int64, unit string) {
	if !c.ok {
		return
	}
	if r.Extra == nil {
		r.Extra = map[string]any{}
	}
	r.Extra["server_cpu_s"] = round2(c.secs)
	if c.wall > 0 {
		r.Extra["server_cpu_percent"] = round2(100 * c.secs / c.wall.Seconds())
	}
	if n > 0 {
		r.Extra["server_cpu_us_per_"+unit] = round2(1e6 * c.secs / float64(n))
	}
}

// deliveryResult fills what every scenario that measures deliveries
// reports from one publish run and its fleet's counts.
func deliveryResult(cfg Config, rate float64, subscribers int, start time.Time, drained time.Duration,
	pub publishOutcome, fr *FleetResult, opened FleetStats) *Result {
	r := &Result{
		Subscribers:    subscribers,
		Topics:         cfg.Topics,
		Publishers:     cfg.Publishers,
		Rate:           rate,
		PayloadBytes:   max(cfg.Payload, len(appendPayload(nil, Stream{}, 1, start.UnixNano(), 0))),
		DurationS:      pub.Elapsed.Seconds(),
		DrainS:         drained.Seconds(),
		Latency:        percentiles(fr.hist),
		PublishLatency: ptr(percentiles(pub.Latency)),
		Published:      pub.Published,
		PublishErrors:  pub.Errors,
		Delivered:      fr.Stats.Delivered,
		Expected:       fr.Expected,
		Lost:           fr.Lost,
		Duplicates:     fr.Duplicates,
		OutOfOrder:     fr.OutOfOrder,
		Unparsed:       fr.Unparsed,
		Reconnects:     fr.Stats.Reconnects,
		PossibleLoss:   fr.Stats.PossibleLoss,
		ConnectErrors:  opened.ConnectErrors,
		Distribution:   distribution(fr.hist),
	}
	if pub.Elapsed > 0 {
		r.PublishesPerS = float64(pub.Published) / pub.Elapsed.Seconds()
	}
	if fr.LastDelivery > 0 {
		if span := time.Duration(fr.LastDelivery - start.UnixNano()); span > 0 {
			r.DeliveriesPerS = float64(fr.Stats.Delivered) / span.Seconds()
		}
	}
	if pub.FirstErr != nil {
		r.Notes = append(r.Notes, "first publish error: "+pub.FirstErr.Error())
	}
	r.Notes = append(r.Notes, fr.Errors...)
	return r
}
