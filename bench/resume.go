package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-hub/herald/client"
)

func init() {
	Register(Scenario{
		Name:    "resume",
		Summary: "publish H updates, then resume from an early, a late and an unknown id: time to first event, replay rate, completeness and order",
		Defaults: func(c *Config) {
			setDefault(&c.Publishers, 64)
			// Publishing a large history takes a while even on a fast hub
			// (100,000 updates at 10,000/s): more room than a fanout.
			setDefault(&c.Duration, 30*time.Second)
		},
		Budget: func(c *Config) time.Duration {
			// Publishing, the recorder's catch-up and three replays, each
			// bounded by Duration (+ Drain).
			return 5*(c.Duration+c.Drain) + c.ConnectTimeout + 30*time.Second
		},
		Run: runResume,
	})
}

// The id no hub has: resuming from it must answer "earliest".
const unknownIDPrefix = "urn:herald-bench:unknown:"

// replayBuffer is the event channel capacity of a replaying subscription:
// a replay arrives as fast as the hub reads its history.
const replayBuffer = 4096

// runResume publishes Cfg.History updates on one topic, as fast as the
// hub takes them, while a recorder subscription notes the order the hub
// gives them. Then it resumes from the first id, from one near the end and
// from an unknown id, one after the other, and checks that each replay
// brings exactly the ids after the resume point, in the recorded order.
func runResume(ctx context.Context, e *Env) (*Result, error) {
	cfg := e.Cfg
	if cfg.History < 2 {
		return nil, errors.New("resume needs --history of at least 2")
	}
	topic := e.Topic("resume", 0)
	var published, replayed atomic.Int64
	mon := e.StartMonitor("resume", func() Counters {
		return Counters{Open: 1, Delivered: replayed.Load(), Published: published.Load()}
	})
	defer mon.Stop()

	// The recorder: subscribed before the first publish, it sees every
	// update live, in the hub's order, which is the order replays must keep.
	mon.SetPhase("recording")
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	rec, err := e.subs.Subscribe(rctx, client.SubscribeOptions{Topics: []string{topic}, Buffer: replayBuffer})
	if err != nil {
		return nil, fmt.Errorf("recorder subscription: %w", err)
	}
	var (
		ids      []string
		recorded atomic.Int64
		recDone  = make(chan struct{})
	)
	go func() { // ends when rec ends: rcancel, below or deferred
		defer close(recDone)
		for ev := range rec.Events() {
			ids = append(ids, ev.ID)
			recorded.Add(1)
		}
	}()

	mon.SetPhase("publishing")
	out := publish(ctx, e.publishers(), pacing{
		Publishers: cfg.Publishers,
		Duration:   cfg.Duration,
		Topics:     []string{topic},
		Payload:    cfg.Payload,
		Count:      int64(cfg.History),
	}, &published)

	// Let the recorder catch up: stop once it has everything, or when it
	// has made no progress for Drain.
	mon.SetPhase("catching up")
	waitProgress(ctx, cfg.Drain, cfg.Duration, func() int64 { return recorded.Load() }, out.Published)
	rcancel()
	rec.Close()
	<-recDone

	r := &Result{
		Subscribers:    1,
		Publishers:     cfg.Publishers,
		PayloadBytes:   cfg.Payload,
		DurationS:      out.Elapsed.Seconds(),
		Published:      out.Published,
		PublishErrors:  out.Errors,
		PublishLatency: ptr(percentiles(out.Latency)),
		Extra:          map[string]any{"history": len(ids)},
	}
	if out.Elapsed > 0 {
		r.PublishesPerS = float64(out.Published) / out.Elapsed.Seconds()
	}
	if out.FirstErr != nil {
		r.Notes = append(r.Notes, "first publish error: "+out.FirstErr.Error())
	}
	if out.Published < int64(cfg.History) && ctx.Err() == nil {
		r.Notes = append(r.Notes, fmt.Sprintf("published %d of --history %d within --duration %s: raise --duration or --publishers", out.Published, cfg.History, cfg.Duration))
	}
	order, dups := dedupe(ids)
	if dups > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("the recorder got %d ids twice", dups))
	}
	if int64(len(order)) < out.Published {
		r.Notes = append(r.Notes, fmt.Sprintf("the recorder saw %d of %d acknowledged updates live", len(order), out.Published))
	}
	if len(order) < 2 {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		return r, fmt.Errorf("the recorder saw %d updates: nothing to resume from", len(order))
	}
	pos := make(map[string]int, len(order))
	for i, id := range order {
		pos[id] = i
	}

	if cfg.RestartCmd != "" {
		mon.SetPhase("restarting")
		took, err := restartHub(ctx, e)
		if err != nil {
			return r, err
		}
		r.Extra["restart_s"] = seconds(took.Seconds())
	}

	late := len(order) - 1 - max(len(order)/100, 1)
	cases := []struct {
		name string
		from string
		at   int
	}{
		{"early", order[0], 0},
		{"late", order[late], late},
		{"unknown", unknownIDPrefix + e.RunID, -1},
	}
	for _, c := range cases {
		if ctx.Err() != nil {
			break
		}
		mon.SetPhase(c.name)
		rc, err := replay(ctx, e, topic, c.name, c.from, c.at, order, pos, &replayed)
		if err != nil {
			return r, fmt.Errorf("resume %s: %w", c.name, err)
		}
		r.Resume = append(r.Resume, rc)
		r.Lost += rc.Lost
		r.Duplicates += rc.Duplicates
		r.OutOfOrder += rc.OutOfOrder
		r.Delivered += rc.Received
		r.Expected += rc.Expected
		r.Reconnects += rc.Reconnects
		r.Subscribers++
	}
	if len(r.Resume) > 0 {
		r.DeliveriesPerS = r.Resume[0].EventsPerS
	}
	r.Timeline = mon.Stop()
	return r, ctx.Err()
}

// restartHub runs Cfg.RestartCmd and waits, within ConnectTimeout, for
// the hub to answer HTTP again. It returns the time from the command's
// start to the first answer.
func restartHub(ctx context.Context, e *Env) (time.Duration, error) {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, e.Cfg.ConnectTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, "sh", "-c", e.Cfg.RestartCmd) //nolint:gosec // the operator's own command
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("--restart-cmd: %w", err)
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if hubAnswers(cctx, e) {
			return time.Since(start), nil
		}
		select {
		case <-cctx.Done():
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("the hub did not answer within %s of --restart-cmd", e.Cfg.ConnectTimeout)
		case <-t.C:
		}
	}
}

// hubAnswers reports whether a HEAD request to the hub gets any HTTP
// answer within a second.
func hubAnswers(ctx context.Context, e *Env) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, e.Cfg.firstHub(), nil)
	if err != nil {
		return false
	}
	resp, err := e.pubHTTP.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return true
}

// dedupe keeps the first occurrence of each id.
func dedupe(ids []string) ([]string, int) {
	seen := make(map[string]struct{}, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if _, ok := seen[id]; ok {
			continue
		}
		seen[id] = struct{}{}
		out = append(out, id)
	}
	return out, len(ids) - len(out)
}

// waitProgress waits until count() reaches target, count() has not moved
// for stall, limit has passed, or ctx ends.
func waitProgress(ctx context.Context, stall, limit time.Duration, count func() int64, target int64) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	end := time.Now().Add(limit)
	last, lastMove := count(), time.Now()
	for last < target {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := count(); n != last {
				last, lastMove = n, now
			}
			if now.Sub(lastMove) > stall || now.After(end) {
				return
			}
		}
	}
}

// replay resumes from `from`, the id at index at of order (-1: unknown,
// nothing expected), and checks what arrives against order[at+1:].
func replay(ctx context.Context, e *Env, topic, name, from string, at int, order []string, pos map[string]int, live *atomic.Int64) (ResumeCase, error) {
	cfg := e.Cfg
	rc := ResumeCase{Name: name, From: from, Position: at}
	expected := 0
	if at >= 0 {
		expected = len(order) - at - 1
	}
	rc.Expected = int64(expected)

	var mu sync.Mutex
	var headers time.Time
	var resumed string
	var reconnects int64
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	sub, err := e.subs.Subscribe(sctx, client.SubscribeOptions{
		Topics:      []string{topic},
		LastEventID: from,
		Buffer:      replayBuffer,
		OnConnect: func(ci client.ConnectInfo) {
			mu.Lock()
			defer mu.Unlock()
			if ci.Attempt == 1 {
				headers, resumed = time.Now(), ci.ResumedFrom
			} else {
				reconnects++
			}
		},
	})
	if err != nil {
		return rc, err
	}
	defer sub.Close()
	returned := time.Now()

	// Each event's place in the history, relative to the resume point,
	// is its sequence number: 1 for the first update after it.
	var tr tracker
	var first, last time.Time
	stall := time.NewTimer(cfg.Drain)
	defer stall.Stop()
	deadline := time.NewTimer(cfg.Duration)
	defer deadline.Stop()
	// Once all expected ids are in, a short grace catches a duplicate or a
	// stray event sent after them; an unknown id expects none at all.
	grace := min(cfg.Drain, 300*time.Millisecond)
	if expected == 0 {
		stall.Reset(grace)
	}
	events := sub.Events()
loop:
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if err := sub.Err(); err != nil {
					return rc, err
				}
				break loop
			}
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			last = now
			rc.Received++
			live.Add(1)
			i, known := pos[ev.ID]
			if !known || i <= at {
				rc.Unexpected++
			} else {
				switch tr.see(uint64(i - at)) {
				case duplicate:
					rc.Duplicates++
				case outOfOrder:
					rc.OutOfOrder++
				}
			}
			if rc.Received-rc.Duplicates-rc.Unexpected >= int64(expected) {
				stall.Reset(grace)
			} else {
				stall.Reset(cfg.Drain)
			}
		case <-stall.C:
			break loop
		case <-deadline.C:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	mu.Lock()
	if headers.IsZero() {
		headers = returned
	}
	rc.ResumedFrom = resumed
	rc.Reconnects = reconnects
	mu.Unlock()
	rc.HeadersMs = ms(headers.Sub(start))
	if !first.IsZero() {
		rc.FirstEventMs = ms(first.Sub(start))
		if d := last.Sub(start); d > 0 {
			rc.EventsPerS = float64(rc.Received) / d.Seconds()
		}
	}
	rc.Lost = tr.lost(uint64(expected), nil)
	rc.OK = rc.Lost == 0 && rc.Duplicates == 0 && rc.OutOfOrder == 0 && rc.Unexpected == 0
	if at < 0 {
		rc.OK = rc.OK && resumed == "earliest"
	}
	return rc, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
