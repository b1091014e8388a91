package redis

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/herald-hub/herald/hub"
)

const (
	// feedLimit bounds the updates one feed round reads.
	feedLimit = 512
	// feedBlock is how long the feed waits on the stream for something
	// new. Between waits it checks the log, so a log replaced without
	// appends (Redis restarted empty, idle) is noticed within it.
	feedBlock = 500 * time.Millisecond
	// The feed retries a Redis it cannot reach after a jittered wait
	// that doubles from backoffMin to backoffMax.
	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second
	// trimBudget bounds the entries one idle trim drops.
	trimBudget = 1000
)

// feedLoop feeds every update appended to the log, from any node, in Seq
// order, going on after any error from the last update it fed.
func (e *Engine) feedLoop(feed func(hub.Batch), st feedState) {
	defer e.wg.Done()
	backoff := backoffMin
	for e.ctx.Err() == nil {
		more, err := e.feedRound(feed, &st)
		if e.ctx.Err() != nil {
			return
		}
		if err != nil {
			e.setDown(err)
			// Full jitter: nodes that lost Redis together do not return
			// as one wave.
			if !e.sleep(time.Duration(rand.Int64N(int64(backoff))) + backoff/2) {
				return
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		e.setDown(nil)
		backoff = backoffMin
		if !more {
			if err := e.waitForMore(st.seq); err != nil && e.ctx.Err() == nil {
				e.setDown(err)
			}
		}
	}
}

// feedRound reads what follows st in the log and feeds it. It reports
// whether there may be more to read at once.
func (e *Engine) feedRound(feed func(hub.Batch), st *feedState) (bool, error) {
	res, err := e.run(e.ctx, "feed", luaFeed, []string{e.keys.meta, e.keys.log},
		strconv.FormatUint(st.epoch, 10), strconv.FormatUint(st.seq, 10), feedLimit, st.nonce,
		strconv.FormatUint(hub.NewEpoch(), 10))
	if err != nil {
		return false, err
	}
	v, ok := res.([]any)
	if !ok || len(v) != 4 {
		return false, errors.New("redis: unexpected feed reply")
	}
	if status, _ := v[0].(string); status != "ok" {
		// Another log, or this one rewritten: find where the new one
		// stands (creating it if Redis has none) and start from its head.
		next, err := e.init(e.ctx)
		if err != nil {
			return false, err
		}
		e.log.Warn("the history in redis was replaced; streams end and resume from the new log",
			"reason", status, "old_epoch", st.epoch, "new_epoch", next.epoch, "head", next.seq)
		e.m.epochChanges.Inc()
		*st = next
		e.epoch.Store(next.epoch)
		feed(hub.Batch{Epoch: next.epoch, After: next.seq})
		return true, nil
	}
	us, last, nonce, err := decodeEntries(v[3])
	if err != nil {
		return false, err
	}
	if last == 0 {
		return false, nil
	}
	now := e.now()
	for len(us) > 0 {
		// One batch per run of consecutive Seqs: a hole (trimmed before
		// this node read it, or a record that cannot be decoded) is a
		// skip the hub reads for itself.
		n := 1
		for n < len(us) && us[n].Seq == us[n-1].Seq+1 {
			n++
		}
		feed(hub.Batch{Epoch: st.epoch, After: us[0].Seq - 1, Updates: us[:n]})
		for _, u := range us[:n] {
			e.m.lag.Observe(max(0, now.Sub(u.Time).Seconds()))
		}
		us = us[n:]
	}
	st.seq, st.nonce = last, nonce
	raw, _ := v[3].([]any)
	return len(raw) == feedLimit, nil
}

// waitForMore blocks until the log may have something after seq, for at
// most feedBlock, or until an append meets another epoch or Close.
func (e *Engine) waitForMore(seq uint64) error {
	select {
	case <-e.kick:
		return nil
	default:
	}
	start := time.Now()
	err := e.waiter.XRead(e.ctx, &goredis.XReadArgs{
		Streams: []string{e.keys.log, strconv.FormatUint(seq, 10) + "-0"},
		Count:   1,
		Block:   feedBlock,
	}).Err()
	e.m.roundTrip("wait", time.Since(start))
	if errors.Is(err, goredis.Nil) {
		return nil
	}
	return err
}

// trimLoop applies retention while nothing is appended: by age, often
// enough for MaxAge, and a count backlog left by a smaller MaxCount.
// Every node runs it; the scripts make that harmless.
func (e *Engine) trimLoop() {
	defer e.wg.Done()
	every := time.Second
	if e.maxAge > 0 {
		every = min(max(e.maxAge/4, 10*time.Millisecond), time.Second)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	keys := []string{e.keys.meta, e.keys.log, e.keys.ids, e.keys.dups}
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		for e.ctx.Err() == nil {
			cutoff := int64(0)
			if e.maxAge > 0 {
				cutoff = e.now().Add(-e.maxAge).UnixMilli()
			}
			n, err := e.run(e.ctx, "trim", luaTrimIdle, keys, e.maxCount, cutoff, trimBudget, e.grace)
			if err != nil || n != int64(trimBudget) {
				break
			}
		}
	}
}

// sleep waits d or until Close; it reports whether the engine still runs.
func (e *Engine) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.ctx.Done():
		return false
	}
}

// HistoryLen implements hub.Stats: the number of entries in the stream,
// or 0 when Redis does not answer.
func (e *Engine) HistoryLen() int {
	ctx, cancel := context.WithTimeout(e.ctx, time.Second)
	defer cancel()
	n, err := e.rdb.XLen(ctx, e.keys.log).Result()
	if err != nil {
		return 0
	}
	return int(n)
}
