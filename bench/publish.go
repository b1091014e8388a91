package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

func init() {
	Register(Scenario{
		Name:     "publish",
		Summary:  "C concurrent publishers on keep-alive connections, no subscribers (or --attached ones on another topic): publishes/s and publish latency",
		Defaults: func(c *Config) { setDefault(&c.Publishers, 8) },
		Budget: func(c *Config) time.Duration {
			// The last publishes may take the client's full timeout.
			return c.ConnectTimeout + c.Duration + 60*time.Second
		},
		Run: runPublish,
	})
}

// runPublish publishes as fast as the hub acknowledges, each publisher one
// update at a time, for Cfg.Duration, with Cfg.Attached subscribers
// connected to a topic nobody publishes to.
func runPublish(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	var published atomic.Int64
	var fleet Fleet
	if cfg.Attached > 0 {
		fleet = e.NewFleet(FleetSpec{Subscribers: cfg.Attached, Topics: e.Topics("publish-attached", 1)})
		defer fleet.Close()
	}
	mon := e.StartMonitor("publish", func() Counters {
		c := Counters{Published: published.Load()}
		if fleet != nil {
			c.Open = fleet.Stats().Open
		}
		return c
	})
	defer mon.Stop()
	if fleet != nil {
		mon.SetPhase("connecting")
		if err := fleet.Open(ctx); err != nil {
			return nil, fmt.Errorf("open attached subscribers: %w", err)
		}
	}
	mon.SetPhase("publishing")
	cpu := startServerCPU(ctx, cfg.ServerPID)
	out := publish(ctx, e.publishers(), pacing{
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
	if fleet != nil {
		st := fleet.Stats()
		r.Subscribers = int(st.Open)
		if st.Open < int64(cfg.Attached) {
			r.Notes = append(r.Notes, fmt.Sprintf("%d of %d attached subscribers were open at the end", st.Open, cfg.Attached))
		}
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
