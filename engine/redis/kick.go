package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/herald-hub/herald/hub"
)

// Kick implements hub.Cluster. Kicks are stored like revocations, in
// their own hash, and expire the same way.
func (e *Engine) Kick(ctx context.Context, id string, until time.Time) error {
	if e.isClosed() {
		return hub.ErrClosed
	}
	v := strconv.FormatInt(e.now().UnixMilli(), 10) + " " + strconv.FormatInt(until.UnixMilli(), 10)
	start := time.Now()
	err := e.rdb.HSet(ctx, e.keys.kicked, id, v).Err()
	if err := e.finish("kick", start, err); err != nil {
		return fmt.Errorf("redis: kick: %w", err)
	}
	return nil
}

// Kicks implements hub.Cluster: those whose until is after Options.Now.
// It deletes those that ended a while ago (revokedKeep).
func (e *Engine) Kicks(ctx context.Context) (map[string]time.Time, error) {
	if e.isClosed() {
		return nil, hub.ErrClosed
	}
	now := e.now()
	res, err := e.run(ctx, "kicks", luaRevocations, []string{e.keys.kicked},
		now.UnixMilli(), now.Add(-revokedKeep).UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("redis: list kicks: %w", err)
	}
	m, err := pairs(res)
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Time, len(m))
	for id, v := range m {
		_, u, _ := strings.Cut(string(v), " ")
		until, err := strconv.ParseInt(u, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redis: corrupt kick %q", v)
		}
		out[id] = time.UnixMilli(until)
	}
	return out, nil
}
