package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/herald-hub/herald/hub"
)

const (
	// clockSkew is how far Redis's clock may be behind a node's for a
	// lost answer to be resolved for certain (see luaAppend).
	clockSkew = 250 * time.Millisecond
	// resolveTimeout bounds the look for an update whose answer was lost,
	// so that a publisher waits at most about a second and a half in all.
	resolveTimeout = 300 * time.Millisecond
)

// appendReq is one Append waiting for a worker.
type appendReq struct {
	ctx  context.Context
	u    *hub.Update
	rec  []byte
	done chan error
}

// Append implements hub.Engine. Appends queue for a few workers, each of
// which sends what has queued as one script, so that concurrent publishers
// share round trips. An append still queued when its ctx ends is dropped
// unsent; one sent is answered with what Redis said.
//
// When the answer is lost (the connection broke, Redis did not answer in
// time), the script's deadline settles it: past it Redis refuses the
// script, so the worker waits it out and looks for the update by id and
// nonce. Found, the append succeeds; not found, it fails and the update
// never appears. Only when Redis cannot be asked in time either is the
// outcome left open (counted in herald_redis_appends_unresolved_total).
// An append that fewer replicas than Options.Wait confirmed fails with
// ErrNotReplicated although it is on the master.
func (e *Engine) Append(ctx context.Context, u *hub.Update) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.breaker.State() == gobreaker.StateOpen {
		return ErrUnavailable
	}
	rec, err := u.MarshalBinary()
	if err != nil {
		return fmt.Errorf("redis: encode update: %w", err)
	}
	req := &appendReq{ctx: ctx, u: u, rec: rec, done: make(chan error, 1)}
	e.closing.RLock()
	if e.closed {
		e.closing.RUnlock()
		return hub.ErrClosed
	}
	select {
	case e.queue <- req:
	case <-ctx.Done():
		e.closing.RUnlock()
		return ctx.Err()
	}
	e.closing.RUnlock()
	return <-req.done
}

// appendLoop is one append worker: it takes the first waiting append and
// whatever else has queued, up to MaxBatch, and commits them together. It
// ends when Close closes the queue, after answering everything in it.
func (e *Engine) appendLoop() {
	defer e.workers.Done()
	batch := make([]*appendReq, 0, e.maxBatch)
	for {
		r, ok := <-e.queue
		if !ok {
			return
		}
		batch = append(batch[:0], r)
	fill:
		for len(batch) < e.maxBatch {
			select {
			case r, ok := <-e.queue:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		e.commit(batch)
		clear(batch)
	}
}

// commit sends one batch and answers each of its appends.
func (e *Engine) commit(batch []*appendReq) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- err // never sent: absent
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	_, err := e.breaker.Execute(func() (struct{}, error) {
		return struct{}{}, e.appendBatch(live)
	})
	switch {
	case errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests):
		err = ErrUnavailable
	case err == nil || errors.Is(err, ErrNotReplicated):
		e.setDown(nil)
	case unreachable(err):
		// Readiness follows at once, without waiting for the feed.
		e.setDown(err)
	}
	for _, r := range live {
		if err != nil {
			r.u.Seq = 0
		}
		r.done <- err
	}
}

// appendBatch runs luaAppend for the batch (and WAIT, when asked) and
// gives each update its Seq.
func (e *Engine) appendBatch(live []*appendReq) error {
	args := make([]any, 0, 6+5*len(live))
	cutoff := int64(0)
	if e.maxAge > 0 {
		cutoff = e.now().Add(-e.maxAge).UnixMilli()
	}
	// Past the deadline Redis refuses the script, so a lost answer can be
	// resolved once it has passed, on Redis's clock: the node waits for
	// it clockSkew longer, for a Redis clock up to that far behind.
	deadline := time.Now().Add(e.timeout)
	args = append(args, strconv.FormatUint(hub.NewEpoch(), 10), e.maxCount, e.keepPres, cutoff, e.grace, deadline.UnixMilli())
	var nonce string
	for _, r := range live {
		nonce = strconv.FormatUint(rand.Uint64(), 36)
		presence := "0"
		if r.u.Presence {
			presence = "1"
		}
		args = append(args, r.u.ID, r.u.Time.UnixMilli(), nonce, r.rec, presence)
	}
	keys := e.keys.trimmed()
	start := time.Now()
	res, err := e.appendScript(e.ctx, keys, args)
	e.m.roundTrip("append", time.Since(start))
	e.m.batch.Observe(float64(len(live)))
	if err != nil && !errors.Is(err, ErrNotReplicated) && mayHaveRun(err) {
		// The answer was lost: wait out the deadline, then look.
		last := live[len(live)-1].u
		if !e.sleep(time.Until(deadline) + clockSkew + 10*time.Millisecond) {
			return fmt.Errorf("redis: append: %w (outcome unknown: closed while resolving)", err)
		}
		epoch, seq, rerr := e.resolve(last.ID, nonce)
		switch {
		case rerr != nil:
			e.m.unresolved.Inc()
			return fmt.Errorf("redis: append: %w (outcome unknown: %v)", err, rerr)
		case seq == 0:
			return fmt.Errorf("redis: append: %w (not stored)", err)
		case e.wait > 0:
			// Stored, but no replica was asked to confirm it.
			return fmt.Errorf("%w: its answer was lost (%v)", ErrNotReplicated, err)
		}
		e.m.resolved.Inc()
		res = []any{strconv.FormatUint(epoch, 10), int64(seq) - int64(len(live)) + 1}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("redis: append: %w", err)
	}
	v, ok := res.([]any)
	if !ok || len(v) != 2 {
		return fmt.Errorf("redis: unexpected reply %v", res)
	}
	epoch, err1 := parseEpoch(v[0])
	first, err2 := parseUint(v[1])
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	for i, r := range live {
		r.u.Seq = first + uint64(i)
	}
	if epoch != e.epoch.Load() {
		// A log the feed has not met yet: wake it to find out.
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// mayHaveRun reports whether a failed call may still have run in Redis:
// its request may have been sent and its answer lost. An error reply, a
// connection never made and a closed client mean it did not run.
func mayHaveRun(err error) bool {
	var re goredis.Error
	if errors.As(err, &re) || errors.Is(err, goredis.ErrClosed) || errors.Is(err, hub.ErrClosed) {
		return false
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return false
	}
	return !errors.Is(err, goredis.ErrPoolTimeout)
}

// unreachable reports whether err says Redis could not be reached or did
// not answer, rather than answered with an error.
func unreachable(err error) bool {
	var re goredis.Error
	return !errors.As(err, &re) && !errors.Is(err, hub.ErrClosed) && !errors.Is(err, context.Canceled)
}

// resolve looks for an update by id and nonce, and returns its epoch and
// Seq, or Seq 0 when it is not in the log.
func (e *Engine) resolve(id, nonce string) (uint64, uint64, error) {
	ctx, cancel := context.WithTimeout(e.ctx, min(e.timeout, resolveTimeout))
	defer cancel()
	res, err := e.run(ctx, "resolve", luaResolve, []string{e.keys.meta, e.keys.log, e.keys.ids, e.keys.dups}, id, nonce)
	if err != nil {
		return 0, 0, err
	}
	v, ok := res.([]any)
	if !ok || len(v) != 2 {
		return 0, 0, fmt.Errorf("redis: unexpected reply %v", res)
	}
	epoch, err := parseEpoch(v[0])
	if err != nil {
		return 0, 0, err
	}
	if n, _ := v[1].(int64); n > 0 {
		return epoch, uint64(n), nil
	}
	return epoch, 0, nil
}

// appendScript runs luaAppend, followed on the same connection by WAIT
// when replicas must confirm.
func (e *Engine) appendScript(ctx context.Context, keys []string, args []any) (any, error) {
	// Through the node that holds the log: a Cluster client would send a
	// script again on its own after a timeout or a broken connection,
	// which could store it twice; the node's own client never does.
	c, err := e.master(ctx)
	if err != nil {
		return nil, err
	}
	if e.wait == 0 {
		return luaAppend.Run(ctx, c, keys, args...).Result()
	}
	for attempt := 0; ; attempt++ {
		var script *goredis.Cmd
		var wait *goredis.Cmd
		// Each command carries its own error: a pipeline cut short sets
		// it on every command it did not read.
		_, _ = c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			if attempt == 0 {
				script = luaAppend.EvalSha(ctx, p, keys, args...)
			} else {
				script = luaAppend.Eval(ctx, p, keys, args...)
			}
			wait = p.Do(ctx, "wait", e.wait, e.waitTime.Milliseconds())
			return nil
		})
		if attempt == 0 && script.Err() != nil && strings.HasPrefix(script.Err().Error(), "NOSCRIPT") {
			continue // nothing ran; send the script itself
		}
		if err := script.Err(); err != nil {
			return nil, err
		}
		// The script ran: whatever kept WAIT from answering, the update
		// is on the master and not confirmed, which is no lost answer.
		if n, err := wait.Int64(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNotReplicated, err)
		} else if n < int64(e.wait) {
			return nil, fmt.Errorf("%w: %d of %d", ErrNotReplicated, n, e.wait)
		}
		return script.Val(), nil
	}
}

// master returns the client of the node that holds the log: WAIT must go
// where the script went, which in a Cluster is the master of the hub's
// slot.
func (e *Engine) master(ctx context.Context) (goredis.Cmdable, error) {
	if cc, ok := e.rdb.(*goredis.ClusterClient); ok {
		return cc.MasterForKey(ctx, e.keys.log)
	}
	return e.rdb, nil
}

// newBreaker opens on an append that could not reach Redis or got no
// answer in time, so that while Redis is down or hung, publishers are
// refused at once instead of each waiting for a timeout behind the batch
// in flight; after a second it lets one append through to try. An error
// Redis answered with is no reason to stop talking to it.
func newBreaker(e *Engine) *gobreaker.CircuitBreaker[struct{}] {
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "redis",
		MaxRequests: 1,
		Timeout:     time.Second,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 },
		IsSuccessful: func(err error) bool {
			return err == nil || errors.Is(err, ErrNotReplicated) || !unreachable(err)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			e.m.breaker.Set(float64(to))
			e.log.Warn("redis circuit breaker", "from", from.String(), "to", to.String())
		},
	})
}
