package mercure

import (
	"context"
	"encoding/json"
	"time"

	"github.com/herald-hub/herald/hub"
)

// DefaultLease is Config.Lease's default.
const DefaultLease = 10 * time.Second

// Run keeps the node's place in the cluster (Config.Cluster) until ctx
// ends: it renews the node's lease a few times per lease; it looks for
// nodes whose leases ran out, and when it is the one node to claim one,
// announces the end of that node's subscriptions and forgets it; and it
// takes up the revocations other nodes made, ending the revoked subjects'
// streams here. Without a cluster it returns at once.
func (h *Handler) Run(ctx context.Context) {
	c := h.cfg.Cluster
	if c == nil {
		return
	}
	every := max(h.cfg.Lease/4, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		// One round at a time under runMu, which Close takes after
		// closing: once Close has forgotten the node, no renewal brings
		// it back.
		h.runMu.Lock()
		select {
		case <-h.closing:
			h.runMu.Unlock()
			return
		default:
		}
		h.renew(ctx)
		h.reap(ctx)
		h.syncRevocations(ctx)
		h.syncKicks(ctx)
		h.runMu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-h.closing:
			return
		case <-t.C:
		}
	}
}

func (h *Handler) renew(ctx context.Context) {
	var info []byte
	if h.cfg.NodeInfo != nil {
		info = h.cfg.NodeInfo()
	}
	fresh, err := h.cfg.Cluster.Renew(ctx, h.node, info, h.cfg.Lease)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("cluster: renew this node's lease", "node", h.node, "err", err)
		}
		return
	}
	// Forgotten: after a pause longer than a lease, or, for a node that
	// took back the subscribers its last run kept, after a restart longer
	// than one. Another node announced their ends.
	if fresh && (h.registered || h.presence != nil && h.presence.took) && h.presence != nil {
		// Another node found this one's lease run out (a pause, a cut
		// longer than a lease), announced the end of its subscriptions
		// and forgot it; they are alive: record and announce them again.
		n := h.presence.reannounce(ctx)
		h.log.Warn("cluster: this node's lease had run out and another node ended its subscriptions; announced them again", "node", h.node, "subscribers", n)
	}
	h.registered = true
}

// reap ends the subscriptions of every node whose lease ran out and that
// this node claims: each is announced ended once, by one node.
func (h *Handler) reap(ctx context.Context) {
	c := h.cfg.Cluster
	nodes, err := c.Nodes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("cluster: list the nodes", "err", err)
		}
		return
	}
	for _, n := range nodes {
		if n.Alive || n.Name == h.node {
			continue
		}
		// The claim outlives the work, so that nobody else starts it
		// while this node is at it.
		won, err := c.Claim(ctx, n.Name, h.node, 3*h.cfg.Lease)
		if err != nil || !won {
			continue
		}
		h.endNode(ctx, n.Name)
	}
}

// endNode announces the end of a dead node's subscriptions, deleting each
// record once its end is announced, and forgets the node. A node that
// dies in the middle leaves the rest to the next claimer.
func (h *Handler) endNode(ctx context.Context, node string) {
	c := h.cfg.Cluster
	docs, err := c.PresenceOf(ctx, node)
	if err != nil {
		h.log.Warn("cluster: read a dead node's subscriptions", "node", node, "err", err)
		return
	}
	ended := 0
	// Work longer than a lease keeps both this node's lease and its
	// claim running: otherwise another node would take this one for dead,
	// or claim the dead one again and announce some ends a second time.
	extend := time.Now().Add(h.cfg.Lease / 2)
	for id, doc := range docs {
		if time.Now().After(extend) {
			h.renew(ctx)
			if won, err := c.Claim(ctx, node, h.node, 3*h.cfg.Lease); err != nil || !won {
				h.log.Warn("cluster: lost the claim on a dead node; another node ends the rest", "node", node, "err", err)
				return
			}
			extend = time.Now().Add(h.cfg.Lease / 2)
		}
		e, ok := parseSubDoc(id, doc)
		if !ok {
			_ = c.PresenceDelete(ctx, node, id)
			continue
		}
		data, err := json.Marshal(e.sub.document(e.subscriber, false, true))
		if err != nil {
			continue
		}
		err = h.publishSubscriptionEvent(ctx, e.sub.form, id, data)
		if h.presence != nil {
			result := "published"
			if err != nil {
				result = "failed"
			}
			h.presence.events.WithLabelValues("false", result).Inc()
		}
		if err != nil {
			h.log.Warn("cluster: announce the end of a dead node's subscription; the next claim retries", "node", node, "err", err)
			return
		}
		if err := c.PresenceDelete(ctx, node, id); err != nil {
			h.log.Warn("cluster: delete a dead node's subscription", "node", node, "err", err)
			return
		}
		ended++
	}
	if err := c.Forget(ctx, node); err != nil {
		h.log.Warn("cluster: forget a dead node", "node", node, "err", err)
		return
	}
	h.log.Info("cluster: a node's lease ran out; its subscriptions are ended", "node", node, "subscriptions", ended)
}

// publishSubscriptionEvent publishes one subscription event: private, on
// its topic, of event type "mercure" in draft-08's form. A node of a
// cluster started without active subscriptions still ends a dead node's.
func (h *Handler) publishSubscriptionEvent(ctx context.Context, form subForm, topic string, data []byte) error {
	m := hub.Message{Topics: []string{topic}, Private: true, Presence: true, Data: string(data)}
	if form == form8 {
		m.Type = subscriptionEventType
	}
	_, err := h.hub.Publish(ctx, m)
	return err
}

// syncKicks takes up the disconnects of single subscribers asked on
// other nodes: the ones this node serves end now.
func (h *Handler) syncKicks(ctx context.Context) {
	if h.presence == nil {
		return
	}
	kicks, err := h.cfg.Cluster.Kicks(ctx)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("cluster: read the disconnects asked of every node", "err", err)
		}
		return
	}
	now := time.Now()
	for id, until := range h.kicks {
		if now.After(until) {
			delete(h.kicks, id)
		}
	}
	for id, until := range kicks {
		if _, seen := h.kicks[id]; seen {
			continue
		}
		if h.kicks == nil {
			h.kicks = make(map[string]time.Time)
		}
		h.kicks[id] = until
		if h.presence.disconnect(id) {
			h.log.Info("cluster: ended a subscriber disconnected from another node", "subscriber", id)
		}
	}
}

// syncRevocations takes up the revocations made on other nodes: the
// subject's tokens are refused here too, and its streams here end.
func (h *Handler) syncRevocations(ctx context.Context) {
	revs, err := h.cfg.Cluster.Revocations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("cluster: read the revocations", "err", err)
		}
		return
	}
	for sub, r := range revs {
		if !h.revoked.merge(sub, r.At, r.Until) {
			continue // known already
		}
		if h.presence != nil {
			h.presence.forget(sub)
		}
		if n := h.hub.EndSubject(sub, hub.ErrDisconnected); n > 0 {
			h.log.Info("cluster: ended the streams of a subject revoked on another node", "sub", sub, "streams", n)
		}
	}
}
