package bench

import (
	"strings"
	"testing"
	"time"
)

// TestFloodHerald runs a calm fanout and the same beside a crowd whose
// subscriptions each carry their own URL patterns: the subscribers lose
// nothing in either, every flood connection is accounted for (open or
// refused), and the subscriptions carried the patterns asked for.
func TestFloodHerald(t *testing.T) {
	cfg, sn := newHerald(t, h1)
	cfg.MetricsURL = "off"
	cfg.Subscribers, cfg.FloodConns, cfg.FloodPatterns = 10, 6, 8
	cfg.Rate, cfg.Duration, cfg.Drain = 100, 700*time.Millisecond, 5*time.Second
	r, obj := run(t, "flood", cfg)
	calm, _ := r.Extra["calm"].(*passSummary)
	flood, _ := r.Extra["flood"].(*passSummary)
	if calm == nil || flood == nil {
		t.Fatalf("extra %v", r.Extra)
	}
	for name, p := range map[string]*passSummary{"calm": calm, "flood": flood} {
		if p.Subscribers != 10 || p.Expected == 0 || p.Delivered != p.Expected || p.Lost != 0 || p.Duplicates != 0 || p.OutOfOrder != 0 {
			t.Errorf("%s: %s", name, p)
		}
	}
	open, _ := r.Extra["flood_open"].(int)
	refused := 0
	if m, ok := r.Extra["flood_refused"].(map[string]int); ok {
		for _, n := range m {
			refused += n
		}
	}
	if open+refused != 6 {
		t.Errorf("flood: %d open and %d refused of 6", open, refused)
	}
	if q, _ := r.Extra["p99_ratio"].(ratio); q <= 0 {
		t.Errorf("p99_ratio %v", r.Extra["p99_ratio"])
	}
	if b, _ := r.Extra["p99_bound_ms"].(float64); b < 5 {
		t.Errorf("p99_bound_ms %v", r.Extra["p99_bound_ms"])
	}
	sn.mu.Lock()
	if sn.patterns[8] != 6 {
		t.Errorf("subscriptions by number of URL patterns: %v, want 6 with 8", sn.patterns)
	}
	sn.mu.Unlock()
	extra, _ := obj["extra"].(map[string]any)
	if _, ok := extra["flood_open"]; !ok {
		t.Errorf("JSON extra lacks flood_open: %v", extra)
	}
	tab := table(t, r)
	for _, want := range []string{"calm", "flood", "p99 ratio"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

// TestSharedPatterns: --patterns adds the same URL patterns to every
// subscription of a fleet.
func TestSharedPatterns(t *testing.T) {
	cfg, sn := newHerald(t, h1)
	cfg.MetricsURL = "off"
	cfg.Subscribers, cfg.Patterns = 5, 3
	cfg.Duration, cfg.Settle = 200*time.Millisecond, time.Second
	run(t, "idle", cfg)
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.patterns[3] != 5 {
		t.Errorf("subscriptions by number of URL patterns: %v, want 5 with 3", sn.patterns)
	}
}
