package mercure

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/herald-hub/herald/hub"
)

// DefaultRevocationTTL is how long Disconnect refuses the tokens of a
// subject that were issued before it: longer than any token a sane
// issuer hands out should live.
const DefaultRevocationTTL = 24 * time.Hour

// revocations are token subjects whose tokens issued before a time are
// refused: a subscriber an administrator disconnected that comes back
// with the same token gets a 401, while a token issued after (the app
// granted access again) works.
type revocations struct {
	mu  sync.Mutex
	m   map[string]revocation
	ttl time.Duration
}

type revocation struct{ at, until time.Time }

// add revokes the tokens of sub issued up to now.
func (r *revocations) add(sub string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]revocation)
	}
	for s, v := range r.m { // few entries: an administrator's acts
		if now.After(v.until) {
			delete(r.m, s)
		}
	}
	r.m[sub] = revocation{at: now, until: now.Add(r.ttl)}
}

// merge takes up a revocation made elsewhere, and reports whether it is
// news: a subject not revoked here, or revoked here before at.
func (r *revocations) merge(sub string, at, until time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.m[sub]; ok && !v.at.Before(at) {
		return false
	}
	if r.m == nil {
		r.m = make(map[string]revocation)
	}
	r.m[sub] = revocation{at: at, until: until}
	return true
}

// has reports whether g's token is revoked: its subject was revoked after
// it was issued (a token without iat counts as issued before).
func (r *revocations) has(g *Grant) bool {
	if g == nil || g.Subject == "" {
		return false
	}
	r.mu.Lock()
	v, ok := r.m[g.Subject]
	r.mu.Unlock()
	if !ok || time.Now().After(v.until) {
		return false
	}
	// iat has whole seconds: a token issued in the second of the
	// revocation is refused too.
	return g.IssuedAt.IsZero() || !g.IssuedAt.After(v.at)
}

// Disconnect ends the streams of every subscriber whose token has the
// subject sub (on every node of a cluster: the others within a quarter of
// a lease), and refuses that subject's tokens issued
// until now for DefaultRevocationTTL (401), so that a subscriber coming
// back with the same token stays out; a token issued later works. Their
// subscriptions' ends are announced at once, without a grace period. It
// returns the number of streams it ended.
func (h *Handler) Disconnect(ctx context.Context, sub string) int {
	if sub == "" {
		return 0
	}
	now := time.Now()
	h.revoked.add(sub, now)
	if c := h.cfg.Cluster; c != nil {
		// The other nodes take it up within a quarter of a lease (Run).
		if err := c.Revoke(ctx, sub, now, now.Add(h.revoked.ttl)); err != nil {
			h.log.Error("cluster: share a revocation; the other nodes will not refuse its tokens", "sub", sub, "err", err)
		}
	}
	if h.presence != nil {
		h.presence.forget(sub)
	}
	return h.hub.EndSubject(sub, hub.ErrDisconnected)
}

// kickTTL is how long a disconnect of one subscriber asked of every node
// runs: several rounds of Run on every node, however late.
const kickTTL = time.Minute

// DisconnectSubscriber ends the stream of the subscriber with the
// identifier id (active subscriptions only: without them subscribers have
// none). Its token stays valid. ended is true when this node served it.
// When it did not and the node is in a cluster, it asks every node, and
// the one that serves it ends it within a quarter of a lease: asked is
// then true.
func (h *Handler) DisconnectSubscriber(ctx context.Context, id string) (ended, asked bool, err error) {
	if h.presence == nil {
		return false, false, nil
	}
	if h.presence.disconnect(id) {
		return true, false, nil
	}
	c := h.cfg.Cluster
	if c == nil {
		return false, false, nil
	}
	if err := c.Kick(ctx, id, time.Now().Add(kickTTL)); err != nil {
		return false, false, fmt.Errorf("ask the other nodes: %w", err)
	}
	return false, true, nil
}

// SubscriptionsEnabled reports whether the handler has active
// subscriptions (Config.Subscriptions).
func (h *Handler) SubscriptionsEnabled() bool { return h.presence != nil }
