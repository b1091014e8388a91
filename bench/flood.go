package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

func init() {
	Register(Scenario{
		Name:    "flood",
		Summary: "fanout to --subscribers, calm, then beside --flood-conns connections each subscribing with --flood-patterns distinct URL patterns that match nothing: the subscribers' P99 and loss in both runs, and how many of the flood's subscriptions the hub refused",
		Defaults: func(c *Config) {
			setDefault(&c.Publishers, 4)
			setDefault(&c.FloodConns, 100)
			setDefault(&c.FloodPatterns, 64)
			// The flood's connections only hold their subscriptions.
			c.SlowMode = "stall"
		},
		Budget: func(c *Config) time.Duration {
			return 2*(c.ConnectTimeout+c.Duration+c.Drain+30*time.Second) + slowCheckMax + 30*time.Second
		},
		Run: runFlood,
	})
}

// floodP99Bound is what the flood may do to the subscribers' P99: at
// most twice the calm figure, plus 5 ms for the noise of a short run.
func floodP99Bound(calm float64) float64 { return 2*calm + 5 }

// runFlood runs the same fanout twice: calm, then with a crowd of
// connections whose every subscription brings Cfg.FloodPatterns URL
// patterns of its own. The patterns match none of the published topics,
// so all they can do to the subscribers is cost the hub time per update
// (evaluating them) and memory (compiling them); a hub that bounds them
// refuses some subscriptions instead, which the result counts by status.
// The Result is the flood run's.
func runFlood(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	if cfg.Draft7 {
		return nil, fmt.Errorf("flood subscribes with URL patterns, a draft-08 matcher: drop --draft7")
	}
	probe, err := e.newServerProbe(ctx)
	if err != nil {
		return nil, err
	}
	defer probe.close()
	var cur passCounters
	mon := e.StartMonitor("flood", cur.counters)
	defer mon.Stop()

	calm, err := slowPass(ctx, e, mon, &cur, probe, "calm", cfg.Subscribers, crowd{})
	if err != nil {
		return nil, fmt.Errorf("calm run: %w", err)
	}
	if ctx.Err() != nil {
		calm.res.Timeline = mon.Stop()
		return calm.res, ctx.Err()
	}
	flood, err := slowPass(ctx, e, mon, &cur, probe, "flood", cfg.Subscribers, crowd{
		n:         cfg.FloodConns,
		patterns:  func(i int) []string { return floodPatterns(i, cfg.FloodPatterns) },
		refusable: true,
	})
	if err != nil {
		return nil, fmt.Errorf("flood run: %w", err)
	}
	r := flood.res
	r.Timeline = mon.Stop()
	r.Notes = slices.Concat(probe.notes, r.Notes)
	for _, n := range calm.res.Notes {
		r.Notes = append(r.Notes, "calm: "+n)
	}
	crowdSum := flood.slow
	r.Extra = map[string]any{
		"calm":           summarizePass(calm.res),
		"flood":          summarizePass(flood.res),
		"flood_conns":    cfg.FloodConns,
		"flood_patterns": cfg.FloodPatterns,
		"flood_open":     crowdSum.Subscribers - crowdSum.ConnectErrors,
		"flood_refused":  crowdSum.Refused,
	}
	if crowdSum.FirstError != "" {
		r.Extra["flood_first_error"] = crowdSum.FirstError
	}
	if a := calm.res.Latency.P99; a > 0 {
		r.Extra["p99_ratio"] = ratio(flood.res.Latency.P99 / a)
		bound := floodP99Bound(a)
		r.Extra["p99_bound_ms"] = bound
		if flood.res.Latency.P99 > bound {
			r.Notes = append(r.Notes, fmt.Sprintf("the flood took the subscribers' P99 to %.1f ms, past 2× the calm %.1f ms + 5 ms", flood.res.Latency.P99, a))
		}
	}
	if flood.res.Lost > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("the subscribers lost %d updates beside the flood", flood.res.Lost))
	}
	if !flood.s1.At.IsZero() && !calm.s1.At.IsZero() && flood.s1.RSSBytes > 0 && calm.s1.RSSBytes > 0 {
		r.Extra["server_rss_flood_minus_calm_kb"] = (float64(flood.s1.RSSBytes) - float64(calm.s1.RSSBytes)) / 1024
	}
	return r, ctx.Err()
}

// floodPatterns are connection c's n URL patterns: distinct from every
// other connection's, with a wildcard host so that no index by host or
// literal prefix can set them aside, and matching none of the topics the
// runs publish to.
func floodPatterns(c, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("https://*/flood/%d/%d/:id", c, i)
	}
	return out
}

// sharedPatterns are n URL patterns that every subscriber of a fleet adds
// to its subscription (Config.Patterns): the same for all, matching none
// of the published topics.
func sharedPatterns(n int) []string {
	if n <= 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("https://example.com/shared/%d/:id", i)
	}
	return out
}
