package bench

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

func init() {
	Register(Scenario{
		Name:     "publish",
		Summary:  "C concurrent publishers on keep-alive connections, no subscribers: publishes/s and publish latency",
		Defaults: func(c *Config) { setDefault(&c.Publishers, 8) },
		Budget: func(c *Config) time.Duration {
			return c.Duration + 60*time.Second // the last publishes may take the client's full timeout
		},
		Run: runPublish,
	})
}

// runPublish publishes as fast as the hub acknowledges, each publisher one
// update at a time, for Cfg.Duration.
func runPublish(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	var published atomic.Int64
	mon := e.StartMonitor("publish", func() Counters { return Counters{Published: published.Load()} })
	mon.SetPhase("publishing")
	cpu := startServerCPU(ctx, cfg.ServerPID)
	out := publish(ctx, e.pubs, pacing{
		Publishers: cfg.Publishers,
		Duration:   cfg.Duration,
		Topics:     e.Topics("publish", cfg.Topics),
		Payload:    cfg.Payload,
	}, &published)
	timeline := mon.Stop()
	serverCPU := cpu.stop(ctx)
	lat := percentiles(out.Latency)
	r := &Result{
		Topics:         cfg.Topics,
		Publishers:     cfg.Publishers,
		PayloadBytes:   cfg.Payload,
		DurationS:      out.Elapsed.Seconds(),
		Latency:        lat,
		PublishLatency: &lat,
		Published:      out.Published,
		PublishErrors:  out.Errors,
		Distribution:   distribution(out.Latency),
		Timeline:       timeline,
	}
	if out.Elapsed > 0 {
		r.PublishesPerS = float64(out.Published) / out.Elapsed.Seconds()
	}
	if out.FirstErr != nil {
		r.Notes = append(r.Notes, "first publish error: "+out.FirstErr.Error())
	}
	if out.Published == 0 && out.FirstErr != nil && ctx.Err() == nil {
		return r, errors.New("no publish succeeded: " + out.FirstErr.Error())
	}
	serverCPU.report(r, out.Published, "publish")
	return r, ctx.Err()
}
