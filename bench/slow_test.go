package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/hub"
)

// TestSlowHerald stalls a quarter of the subscribers of a hub whose queue
// budget is small: the prompt ones must lose nothing in either run, and
// the hub must disconnect every stalled one. The budget holds half a
// second of updates, so that a prompt reader held up on a loaded machine
// stays within it, while the stalled ones, which read nothing, overflow it
// four times over.
func TestSlowHerald(t *testing.T) {
	cfg, h := newServedHerald(t, func(c *hub.Config) {
		c.QueueBytes = 200 << 10
		c.WriteTimeout = 2 * time.Second
	}, 8<<10)
	cfg.Subscribers, cfg.SlowFraction = 20, 0.25
	cfg.Rate, cfg.Payload, cfg.Publishers = 100, 4000, 2
	cfg.Duration, cfg.Drain = 2*time.Second, 5*time.Second
	r, obj := run(t, "slow", cfg)

	alone, _ := r.Extra["prompt_alone"].(*passSummary)
	reading, _ := r.Extra["prompt_all_reading"].(*passSummary)
	with, _ := r.Extra["prompt_with_slow"].(*passSummary)
	if alone == nil || reading == nil || with == nil {
		t.Fatalf("extra %v", r.Extra)
	}
	for name, p := range map[string]*passSummary{"alone": alone, "all reading": reading, "with slow": with} {
		if p.Subscribers != 15 || p.Expected == 0 || p.Delivered != p.Expected || p.Lost != 0 || p.Duplicates != 0 || p.OutOfOrder != 0 {
			t.Errorf("prompt subscribers %s: %s", name, p)
		}
	}
	if r.Expected != r.Published*15 || r.Lost != 0 || r.Subscribers != 20 {
		t.Errorf("result: published %d, expected %d, lost %d, subscribers %d", r.Published, r.Expected, r.Lost, r.Subscribers)
	}
	slow, _ := r.Extra["slow_readers"].(*slowSummary)
	if slow == nil || slow.Subscribers != 5 || slow.ConnectErrors != 0 || slow.Disconnected != 5 || slow.EndedFoundAtEnd != 5 || slow.StillOpen != 0 || slow.EventsRead != 0 {
		t.Errorf("slow readers %s", slow)
	}
	if n, _ := r.Extra["hub_slow_disconnects"].(float64); n != 5 {
		t.Errorf("herald_slow_subscriber_disconnects_total grew by %v, want 5", r.Extra["hub_slow_disconnects"])
	}
	for _, k := range []string{"p99_ratio", "p99_ratio_vs_alone"} {
		if q, _ := r.Extra[k].(ratio); q <= 0 {
			t.Errorf("%s %v", k, r.Extra[k])
		}
	}
	waitSubscribers(t, h, 0)
	extra, _ := obj["extra"].(map[string]any)
	if s, _ := extra["slow_readers"].(map[string]any); s["disconnected"] != 5.0 {
		t.Errorf("JSON extra.slow_readers %v", s)
	}
	tab := table(t, r)
	for _, want := range []string{"prompt alone", "prompt all reading", "prompt with slow", "p99 ratio", "slow readers", "the hub disconnected 5"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

// In slow mode the readers read during the run, and a hub that keeps up
// with them (the default budget) disconnects none.
func TestSlowModeHerald(t *testing.T) {
	cfg, _ := newHerald(t, h1)
	cfg.MetricsURL = "off"
	cfg.Subscribers, cfg.SlowFraction, cfg.SlowMode, cfg.SlowDelay = 10, 0.2, "slow", 20*time.Millisecond
	cfg.Rate, cfg.Duration, cfg.Drain = 100, 700*time.Millisecond, 5*time.Second
	r, _ := run(t, "slow", cfg)
	slow, _ := r.Extra["slow_readers"].(*slowSummary)
	if slow == nil || slow.Subscribers != 2 || slow.EventsRead == 0 || slow.Disconnected != 0 || slow.StillOpen != 2 || slow.EventsRead+slow.EventsDrained != 2*r.Published {
		t.Errorf("slow readers %s; published %d", slow, r.Published)
	}
	if r.Lost != 0 || r.Expected != 8*r.Published {
		t.Errorf("lost %d, expected %d, published %d", r.Lost, r.Expected, r.Published)
	}
}
