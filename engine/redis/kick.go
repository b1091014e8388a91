package redis

import (
	"context"
	"fmt"
	"time"
)

// Kick implements hub.Cluster. Kicks are stored like revocations, in
// their own hash, and expire the same way.
func (e *Engine) Kick(ctx context.Context, id string, until time.Time) error {
	if err := e.putSpan(ctx, "kick", e.keys.kicked, id, e.now(), until); err != nil {
		return fmt.Errorf("redis: kick: %w", err)
	}
	return nil
}

// Kicks implements hub.Cluster: those whose until is after Options.Now.
// It deletes those that ended a while ago (revokedKeep).
func (e *Engine) Kicks(ctx context.Context) (map[string]time.Time, error) {
	m, err := e.spans(ctx, "kicks", e.keys.kicked)
	if err != nil {
		return nil, fmt.Errorf("redis: list kicks: %w", err)
	}
	out := make(map[string]time.Time, len(m))
	for id, r := range m {
		out[id] = r.Until
	}
	return out, nil
}
