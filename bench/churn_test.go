package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestChurnHerald(t *testing.T) {
	cfg, h := newServedHerald(t, nil, 0)
	// No --server-pid: the hub shares this process, whose RSS and fds say
	// little about it; its metrics do (herald_subscribers above all).
	cfg.ChurnRate, cfg.Duration, cfg.Settle = 100, time.Second, 3*time.Second
	cfg.Topics = 3
	r, obj := run(t, "churn", cfg)

	st, _ := r.Extra["churn"].(*churnStats)
	if st == nil {
		t.Fatalf("no churn stats: %v", r.Extra)
	}
	if st.Connected.Load() != 100 || st.Clean.Load() != 50 || st.Reset.Load() != 50 || st.ConnectErrors.Load() != 0 || st.Skipped.Load() != 0 {
		t.Errorf("churn %s", st)
	}
	if st.PeakOpen.Load() < 2 || r.Subscribers != 100 || r.ConnectErrors != 0 {
		t.Errorf("peak open %d, subscribers %d, connect errors %d", st.PeakOpen.Load(), r.Subscribers, r.ConnectErrors)
	}
	subs, _ := r.Extra["server_subscribers"].(*settleFigure)
	if subs == nil || !subs.Returned || subs.Final != 0 || subs.Baseline != 0 || subs.AfterS < 0 || subs.AfterS > 3 {
		t.Errorf("herald_subscribers %+v: want back to 0", subs)
	}
	if subs != nil && subs.Peak < 2 {
		t.Errorf("herald_subscribers never rose: %+v", subs)
	}
	conns, _ := r.Extra["server_connections"].(*settleFigure)
	if conns == nil || !conns.Returned {
		t.Errorf("herald_connections %+v: want back to baseline", conns)
	}
	for _, k := range []string{"server_goroutines", "server_heap_inuse", "connect_latency", "watched_after"} {
		if _, ok := r.Extra[k]; !ok {
			t.Errorf("Extra lacks %q", k)
		}
	}
	waitSubscribers(t, h, 0)
	extra, _ := obj["extra"].(map[string]any)
	js, _ := extra["server_subscribers"].(map[string]any)
	if js["returned"] != true {
		t.Errorf("JSON extra.server_subscribers %v", js)
	}
	if c, _ := extra["churn"].(map[string]any); c["reset"] != 50.0 || c["clean"] != 50.0 {
		t.Errorf("JSON extra.churn %v", c)
	}
	tab := table(t, r)
	for _, want := range []string{"server subscribers", "returned after", "reset (SO_LINGER 0)", "connect latency"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

// Churn needs something to watch, and HTTP/1.1.
func TestChurnRefuses(t *testing.T) {
	cfg, _ := newHerald(t, h1)
	cfg.MetricsURL = "off"
	if _, err := Run(t.Context(), "churn", cfg, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--server-pid") {
		t.Errorf("err %v", err)
	}
	cfg.HTTP2 = true
	if _, err := Run(t.Context(), "churn", cfg, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "HTTP/1.1") {
		t.Errorf("err %v", err)
	}
}

// A reset connection is seen by the hub as gone, like a clean one.
func TestRawSubscribeReset(t *testing.T) {
	cfg, h := newServedHerald(t, nil, 0)
	cfg.fill()
	e, err := newEnv(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	rc, err := e.rawSubscribe(ctx, e.Topic("raw", 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := h.Subscribers(); n != 1 {
		t.Errorf("%d subscribers after subscribing", n)
	}
	rc.reset()
	for h.Subscribers() != 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.Subscribers(); n != 0 {
		t.Errorf("%d subscribers after the reset", n)
	}
}
