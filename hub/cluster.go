package hub

import (
	"context"
	"time"
)

// Cluster is implemented by engines shared between nodes (engine/redis):
// the state nodes share beside the log. Each node keeps there, under its
// own name, the active subscriptions it serves and a record of itself
// under a lease it renews; any node reads every node's; a node whose lease
// has run out is dead, and one surviving node claims it, announces the end
// of its subscriptions and forgets it. Revocations (an administrator's
// disconnect of a token subject) are kept there too, so every node
// refuses the revoked tokens and ends their streams.
//
// Node names are unique per process: a restarted node is another node.
// Every method is safe for concurrent use and bounded by ctx.
type Cluster interface {
	// PresenceSet records the subscription id (its event topic) of node
	// with its document (opaque bytes, JSON in practice), replacing any.
	PresenceSet(ctx context.Context, node, id string, doc []byte) error
	// PresenceDelete removes the subscription id of node; removing one
	// that is not there is no error.
	PresenceDelete(ctx context.Context, node, id string) error
	// PresenceList returns the subscriptions of every node still known
	// (alive, or dead and not yet forgotten), by id.
	PresenceList(ctx context.Context) (map[string][]byte, error)
	// PresenceOf returns the subscriptions node still has recorded, by
	// id: what a node that claimed it must announce the end of.
	PresenceOf(ctx context.Context, node string) (map[string][]byte, error)

	// Renew registers node if needed, stores info (opaque bytes: its
	// figures for the admin API) and extends its lease to ttl from now.
	// fresh is true when node was not registered: at its first renewal,
	// and at one after another node found its lease run out and forgot
	// it (the node was paused, or cut off, for longer than a lease), when
	// the node must record its subscriptions again.
	Renew(ctx context.Context, node string, info []byte, ttl time.Duration) (fresh bool, err error)
	// Nodes returns every registered node: its info, and whether its
	// lease still runs.
	Nodes(ctx context.Context) ([]NodeState, error)
	// Claim makes the calling node, named by, the one that ends node:
	// true for exactly one caller among all nodes while the claim lasts
	// (ttl), and only for a node whose lease has run out. The claimer
	// calling again gets true and its claim extended to ttl from now,
	// so that work longer than ttl stays its own.
	Claim(ctx context.Context, node, by string, ttl time.Duration) (bool, error)
	// Forget removes node: its record, its lease, its subscriptions and
	// its claim. A node forgets itself when it stops cleanly.
	Forget(ctx context.Context, node string) error

	// Park records that node's subscriber id, which key recognizes (its
	// token's issuer and subject and its matchers), is in its grace
	// period until until, so that the node where it comes back can take
	// it over and it keeps its identifier.
	Park(ctx context.Context, key, node, id string, until time.Time) error
	// TakeParked takes the subscriber of key parked first whose period
	// has not ended, whose node is not by and whose node's lease still
	// runs; once taken, no other caller gets it and Unpark reports it
	// gone. ok is false when there is none.
	TakeParked(ctx context.Context, key, by string) (node, id string, ok bool, err error)
	// Unpark takes node's subscriber id out of the parked ones of key and
	// reports whether it was still there: false means another node took
	// it (or it was never parked, or its period ended long ago).
	Unpark(ctx context.Context, key, node, id string) (bool, error)

	// Revoke refuses, until until, the tokens of the subject sub issued
	// up to at; a later call for the same sub replaces the earlier.
	Revoke(ctx context.Context, sub string, at, until time.Time) error
	// Revocations returns the revocations that still run, by subject.
	Revocations(ctx context.Context) (map[string]Revocation, error)

	// Kick asks every node to end the stream of the subscriber with the
	// identifier id, if it serves it; the request runs until until, and
	// each node takes it up when it next reads Kicks. A later call for
	// the same id replaces the earlier.
	Kick(ctx context.Context, id string, until time.Time) error
	// Kicks returns the kicks that still run: when each ends, by
	// subscriber identifier.
	Kicks(ctx context.Context) (map[string]time.Time, error)
}

// NodeState is one node as Cluster.Nodes sees it.
type NodeState struct {
	Name  string
	Info  []byte
	Alive bool // its lease still runs
}

// Revocation is one revoked token subject (Cluster.Revoke).
type Revocation struct {
	At, Until time.Time
}
