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
//
// It reads in two ways. A blocking XREAD returns what follows the last
// Seq fed as soon as it is appended; the feed takes it as it is when the
// nonces chain it to what it fed last, without another round trip. Every
// feedBlock, and whenever the chain breaks or Redis failed, it reads with
// luaFeed instead, which checks the epoch and the entry at the last Seq
// fed in the same step: that is how it learns of a replaced log even
// while updates keep coming.
func (e *Engine) feedLoop(feed func(hub.Batch), st feedState) {
	defer e.wg.Done()
	backoff := backoffMin
	var checked time.Time
	for e.ctx.Err() == nil {
		var err error
		if time.Since(checked) >= feedBlock {
			var more bool
			more, err = e.feedRound(feed, &st)
			if err == nil {
				checked = time.Now()
				if more {
					continue
				}
			}
		}
		if err == nil {
			var fed bool
			fed, err = e.readLive(feed, &st)
			if err == nil && !fed {
				checked = time.Time{} // idle or out of step: check now
			}
		}
		if e.ctx.Err() != nil {
			return
		}
		if err != nil {
			e.setDown(err)
			checked = time.Time{}
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
	}
}

// feedRound reads what follows st in the log with luaFeed and feeds it.
// It reports whether there may be more to read at once.
func (e *Engine) feedRound(feed func(hub.Batch), st *feedState) (bool, error) {
	res, err := e.run(e.ctx, "feed", luaFeed, []string{e.keys.meta, e.keys.log, e.keys.dropped},
		strconv.FormatUint(st.epoch, 10), strconv.FormatUint(st.seq, 10), feedLimit, st.nonce)
	if err != nil {
		return false, err
	}
	v, ok := res.([]any)
	if !ok || len(v) != 5 {
		return false, errors.New("redis: unexpected feed reply")
	}
	if status, _ := v[0].(string); status != "ok" {
		if status == "rewritten" {
			// Name the new log, and where it parts from what this node
			// fed, unless another node did first.
			args := append([]any{strconv.FormatUint(st.epoch, 10), strconv.FormatUint(hub.NewEpoch(), 10)}, st.recentArgs()...)
			if _, err := e.run(e.ctx, "feed", luaRewritten, []string{e.keys.meta, e.keys.log}, args...); err != nil {
				return false, err
			}
		}
		// Another log: find where it stands (creating it if Redis has
		// none) and feed it from its origin, so that what was appended to
		// it before this node noticed is fed too.
		ls, err := e.init(e.ctx)
		if err != nil {
			return false, err
		}
		e.log.Warn("the history in redis was replaced; streams end and resume from the new log",
			"reason", status, "old_epoch", st.epoch, "new_epoch", ls.epoch, "origin", ls.origin, "head", ls.head)
		e.m.epochChanges.Inc()
		*st = feedState{epoch: ls.epoch, seq: ls.origin, nonce: ls.originNonce}
		e.epoch.Store(ls.epoch)
		feed(hub.Batch{Epoch: ls.epoch, After: ls.origin})
		return true, nil
	}
	es, err := decodeEntries(v[3])
	if err != nil {
		return false, err
	}
	other, err := parseUint(v[4])
	if err != nil {
		return false, err
	}
	e.feedEntries(feed, st, es, other > st.seq)
	return es.n == feedLimit, nil
}

// readLive waits, for at most feedBlock, for entries after st and feeds
// them if they follow what was fed last in the same log. It reports
// whether it fed them; false means nothing came, or something the feed
// must check with luaFeed.
func (e *Engine) readLive(feed func(hub.Batch), st *feedState) (bool, error) {
	select {
	case <-e.kick:
		return false, nil // an append met another epoch
	default:
	}
	start := time.Now()
	res, err := e.waiter.Do(e.ctx, "XREAD", "COUNT", feedLimit, "BLOCK", feedBlock.Milliseconds(),
		"STREAMS", e.keys.log, strconv.FormatUint(st.seq, 10)+"-0").Result()
	e.m.roundTrip("wait", time.Since(start))
	if errors.Is(err, goredis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// RESP3 answers a map of streams, RESP2 an array of [name, entries].
	var got any
	switch v := res.(type) {
	case map[any]any:
		got = v[e.keys.log]
	case []any:
		if s, _ := v[0].([]any); len(v) == 1 && len(s) == 2 {
			got = s[1]
		}
	}
	es, err := decodeEntries(got)
	if err != nil || es.n == 0 || es.first != st.seq+1 || es.prev != st.nonce {
		return false, nil
	}
	e.feedEntries(feed, st, es, false)
	return true, nil
}

// feedEntries feeds entries that follow st and moves st past them. gap
// says whether updates that are not presence ones were dropped between
// st and the first entry: trimmed before this node read them.
//
// That, and an entry that cannot be decoded, is a skip the hub reads for
// itself: the batch after it starts after it. Seqs missing anywhere else
// are presence updates that retention dropped from the middle of the log
// (a node more than the grace period behind): they are passed over inside
// a batch, since they are gone for every reader, and a skip would send the
// hub to read a range that holds nothing and reports no Gap.
func (e *Engine) feedEntries(feed func(hub.Batch), st *feedState, es entries, gap bool) {
	if es.n == 0 {
		return
	}
	now := e.now()
	us, bad := es.updates, es.bad
	after := st.seq
	if gap {
		after = es.first - 1
	}
	for len(us) > 0 {
		for len(bad) > 0 && bad[0] < us[0].Seq {
			after, bad = us[0].Seq-1, bad[1:]
		}
		n := 1
		for n < len(us) && (len(bad) == 0 || bad[0] > us[n].Seq) {
			n++
		}
		feed(hub.Batch{Epoch: st.epoch, After: after, Updates: us[:n]})
		after = us[n-1].Seq
		for _, u := range us[:n] {
			e.m.lag.Observe(max(0, now.Sub(u.Time).Seconds()))
		}
		us = us[n:]
	}
	st.seq, st.nonce = es.last, es.nonce
	for _, m := range es.marks {
		st.remember(m)
	}
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
	keys := e.keys.trimmed()
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
			n, err := e.run(e.ctx, "trim", luaTrimIdle, keys, e.maxCount, e.keepPres, cutoff, trimBudget, e.grace)
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
