package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/herald-hub/herald/hub"
)

// The state nodes share (hub.Cluster) lives beside the log, under the
// same hash tag, so that a Cluster keeps it in the log's slot and a script
// may touch several of its keys:
//
//	{prefix}:nodes           hash: node -> info
//	{prefix}:lease:<node>    string with an expiry: the node's lease
//	{prefix}:presence:<node> hash: subscription id -> document
//	{prefix}:claim:<node>    string with an expiry: the claimer's name
//	{prefix}:revoked         hash: subject -> "<at> <until>" (Unix ms)
//	{prefix}:kicked          hash: subscriber id -> "<at> <until>" (Unix ms)
//	{prefix}:parked:<sha1>   list: "<until ms>\x00<node>\x00<id>", the
//	                         subscribers of one key in their grace period
//
// A node name goes into key names as it is. Whatever bytes it holds, the
// hash tag stays the prefix: Redis takes the tag from the first "{" to the
// first "}" after it, both in "{prefix}", which holds no braces.

// DefaultMaxPresence is the default of Options.MaxPresence.
const DefaultMaxPresence = 100_000

// revokedKeep is how long past its end a revocation stays in Redis before
// a reader deletes it: the clocks of the nodes, whose Now decides, may
// disagree by that much without one node dropping a revocation that
// another still enforces.
const revokedKeep = time.Minute

// ErrTooMany is returned by PresenceList when the nodes have more
// subscriptions recorded than Options.MaxPresence: they are not read.
var ErrTooMany = errors.New("redis: too many active subscriptions to list")

// luaRenew stores a node's info and extends its lease. The lease is
// written first: SET is the only step that can refuse (a bad expiry), and
// a node must never be registered without a lease.
//
// KEYS: nodes, lease. ARGV: node, info, ttl (ms). It returns 1 when the
// node was not registered, else 0 (HSET's count of new fields).
var luaRenew = goredis.NewScript(`
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
`)

// luaNodes lists the registered nodes with their info and whether their
// lease runs: name, info, 0 or 1, for each.
//
// KEYS: nodes. ARGV: the lease key prefix.
var luaNodes = goredis.NewScript(`
local kv = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #kv, 2 do
  out[#out + 1] = kv[i]
  out[#out + 1] = kv[i + 1]
  out[#out + 1] = redis.call('EXISTS', ARGV[1] .. kv[i])
end
return out
`)

// luaClaim gives the claim on a registered node whose lease has run out
// to the first caller: 1 for it, 0 for everyone else while the claim
// lasts, and 0 while the lease runs or once the node is forgotten. The
// claimer calling again gets 1 and its claim extended.
//
// KEYS: nodes, lease, claim. ARGV: node, claimer, ttl (ms).
var luaClaim = goredis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local cur = redis.call('GET', KEYS[3])
if cur == ARGV[2] then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return 1
`)

// luaForget removes everything of a node.
//
// KEYS: nodes, lease, presence, claim. ARGV: node.
var luaForget = goredis.NewScript(`
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`)

// luaPresenceCount lists the registered nodes that have subscriptions
// recorded, with how many: node, count, for each. It costs one HLEN a
// node, so PresenceList learns whether it may read them before it reads
// anything.
//
// The reading itself is left to HGETALL and HSCAN outside any script: a
// script runs alone, and one that gathered 100,000 subscriptions of 8
// nodes held Redis for 480 ms (600 ms of its CPU a list); read a page at
// a time, no command took 5 ms and a list cost Redis 104 ms of CPU, in
// 214 ms (SLOWLOG and BenchmarkPresenceList, Redis 7.0, 2 cores).
//
// KEYS: nodes. ARGV: the presence key prefix.
var luaPresenceCount = goredis.NewScript(`
local out = {}
for _, node in ipairs(redis.call('HKEYS', KEYS[1])) do
  local n = redis.call('HLEN', ARGV[1] .. node)
  if n > 0 then
    out[#out + 1] = node
    out[#out + 1] = n
  end
end
return out
`)

// presencePage bounds what one command reads of a node's presence, so
// that Redis is never held long by one: a node with more is read with
// HSCAN, about this many entries a round trip.
const presencePage = 1000

// luaRevocations returns the revocations that run at ARGV[1] (Unix ms):
// subject, "<at> <until>", for each. It deletes those that ended before
// ARGV[2], and entries it cannot read.
//
// KEYS: revoked. ARGV: now, drop before (both Unix ms).
var luaRevocations = goredis.NewScript(`
local now, drop = tonumber(ARGV[1]), tonumber(ARGV[2])
local kv = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #kv, 2 do
  local untilms = tonumber(string.match(kv[i + 1], '^%-?%d+ (%-?%d+)$') or '')
  if untilms and untilms > now then
    out[#out + 1] = kv[i]
    out[#out + 1] = kv[i + 1]
  elseif not untilms or untilms < drop then
    redis.call('HDEL', KEYS[1], kv[i])
  end
end
return out
`)

// PresenceSet implements hub.Cluster.
//
// It does not check that node is registered: a node records its
// subscriptions before its first Renew as well as after. A node that wrote
// after it was forgotten (paused past its lease) has them listed again
// once it renews.
func (e *Engine) PresenceSet(ctx context.Context, node, id string, doc []byte) error {
	if err := e.checkNode(node); err != nil {
		return err
	}
	start := time.Now()
	err := e.rdb.HSet(ctx, e.keys.presence+node, id, doc).Err()
	if err := e.finish("presence_set", start, err); err != nil {
		return fmt.Errorf("redis: record presence: %w", err)
	}
	return nil
}

// PresenceDelete implements hub.Cluster.
func (e *Engine) PresenceDelete(ctx context.Context, node, id string) error {
	if err := e.checkNode(node); err != nil {
		return err
	}
	start := time.Now()
	err := e.rdb.HDel(ctx, e.keys.presence+node, id).Err()
	if err := e.finish("presence_delete", start, err); err != nil {
		return fmt.Errorf("redis: delete presence: %w", err)
	}
	return nil
}

// PresenceList implements hub.Cluster. It counts first, and reads
// nothing when there are more than Options.MaxPresence in all: it fails
// with ErrTooMany. Otherwise it takes a round trip for the count, one for
// every node with at most presencePage subscriptions together, and one a
// page for each node with more. Nodes are read one after the other, not
// in one snapshot: a subscription that comes or goes meanwhile may or may
// not be listed.
func (e *Engine) PresenceList(ctx context.Context) (map[string][]byte, error) {
	if e.isClosed() {
		return nil, hub.ErrClosed
	}
	res, err := e.run(ctx, "presence_list", luaPresenceCount, []string{e.keys.nodes}, e.keys.presence)
	if err != nil {
		return nil, fmt.Errorf("redis: count presence: %w", err)
	}
	v, ok := res.([]any)
	if !ok || len(v)%2 != 0 {
		return nil, fmt.Errorf("redis: unexpected reply %v", res)
	}
	var small, big []string
	total := int64(0)
	for i := 0; i < len(v); i += 2 {
		node, ok1 := v[i].(string)
		n, ok2 := v[i+1].(int64)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("redis: unexpected count %v", v[i:i+2])
		}
		total += n
		if n <= presencePage {
			small = append(small, node)
		} else {
			big = append(big, node)
		}
	}
	if total > int64(e.maxPres) {
		return nil, fmt.Errorf("%w: %d recorded, at most %d", ErrTooMany, total, e.maxPres)
	}
	out := make(map[string][]byte, total)
	if len(small) > 0 {
		start := time.Now()
		cmds, err := e.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, node := range small {
				p.HGetAll(ctx, e.keys.presence+node)
			}
			return nil
		})
		if err := e.finish("presence_list", start, err); err != nil {
			return nil, fmt.Errorf("redis: list presence: %w", err)
		}
		for _, c := range cmds {
			for id, doc := range c.(*goredis.MapStringStringCmd).Val() {
				out[id] = []byte(doc)
			}
		}
	}
	for _, node := range big {
		if err := e.scanPresence(ctx, "presence_list", node, out); err != nil {
			return nil, fmt.Errorf("redis: list presence: %w", err)
		}
	}
	return out, nil
}

// PresenceOf implements hub.Cluster. It reads the whole of what node has
// recorded, however much: the node that ends it must see all of it. It
// takes a round trip for about every presencePage subscriptions.
func (e *Engine) PresenceOf(ctx context.Context, node string) (map[string][]byte, error) {
	if err := e.checkNode(node); err != nil {
		return nil, err
	}
	out := make(map[string][]byte)
	if err := e.scanPresence(ctx, "presence_of", node, out); err != nil {
		return nil, fmt.Errorf("redis: read presence: %w", err)
	}
	return out, nil
}

// scanPresence adds node's presence to out, a page at a time. HSCAN
// returns every entry present from the first page to the last (some
// maybe twice, which the map absorbs).
func (e *Engine) scanPresence(ctx context.Context, op, node string, out map[string][]byte) error {
	var cursor uint64
	for {
		start := time.Now()
		kv, next, err := e.rdb.HScan(ctx, e.keys.presence+node, cursor, "", presencePage).Result()
		if err := e.finish(op, start, err); err != nil {
			return err
		}
		if len(kv)%2 != 0 {
			return fmt.Errorf("unexpected HSCAN reply of %d elements", len(kv))
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = []byte(kv[i+1])
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// Renew implements hub.Cluster. The lease runs on Redis's clock.
func (e *Engine) Renew(ctx context.Context, node string, info []byte, ttl time.Duration) (bool, error) {
	if err := e.checkNode(node); err != nil {
		return false, err
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return false, err
	}
	res, err := e.run(ctx, "renew", luaRenew, []string{e.keys.nodes, e.keys.lease + node}, node, info, ms)
	if err != nil {
		return false, fmt.Errorf("redis: renew lease: %w", err)
	}
	added, ok := res.(int64)
	if !ok {
		return false, fmt.Errorf("redis: unexpected reply %v", res)
	}
	return added == 1, nil
}

// Nodes implements hub.Cluster, in one round trip, sorted by name.
func (e *Engine) Nodes(ctx context.Context) ([]hub.NodeState, error) {
	if e.isClosed() {
		return nil, hub.ErrClosed
	}
	res, err := e.run(ctx, "nodes", luaNodes, []string{e.keys.nodes}, e.keys.lease)
	if err != nil {
		return nil, fmt.Errorf("redis: list nodes: %w", err)
	}
	v, ok := res.([]any)
	if !ok || len(v)%3 != 0 {
		return nil, fmt.Errorf("redis: unexpected reply %v", res)
	}
	ns := make([]hub.NodeState, 0, len(v)/3)
	for i := 0; i < len(v); i += 3 {
		name, ok1 := v[i].(string)
		info, ok2 := v[i+1].(string)
		alive, ok3 := v[i+2].(int64)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("redis: unexpected node entry %v", v[i:i+3])
		}
		ns = append(ns, hub.NodeState{Name: name, Info: []byte(info), Alive: alive == 1})
	}
	slices.SortFunc(ns, func(a, b hub.NodeState) int { return strings.Compare(a.Name, b.Name) })
	return ns, nil
}

// Claim implements hub.Cluster. The claim is a key that Redis expires
// after ttl; the claimer calling again extends it. A node never
// registered, or already forgotten, cannot be claimed.
func (e *Engine) Claim(ctx context.Context, node, by string, ttl time.Duration) (bool, error) {
	if err := e.checkNode(node); err != nil {
		return false, err
	}
	if err := e.checkNode(by); err != nil {
		return false, err
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return false, err
	}
	res, err := e.run(ctx, "claim", luaClaim, []string{e.keys.nodes, e.keys.lease + node, e.keys.claim + node}, node, by, ms)
	if err != nil {
		return false, fmt.Errorf("redis: claim node: %w", err)
	}
	n, ok := res.(int64)
	if !ok {
		return false, fmt.Errorf("redis: unexpected reply %v", res)
	}
	return n == 1, nil
}

// Forget implements hub.Cluster, atomically.
func (e *Engine) Forget(ctx context.Context, node string) error {
	if err := e.checkNode(node); err != nil {
		return err
	}
	keys := []string{e.keys.nodes, e.keys.lease + node, e.keys.presence + node, e.keys.claim + node}
	if _, err := e.run(ctx, "forget", luaForget, keys, node); err != nil {
		return fmt.Errorf("redis: forget node: %w", err)
	}
	return nil
}

// Revoke implements hub.Cluster. Times are kept to the millisecond.
func (e *Engine) Revoke(ctx context.Context, sub string, at, until time.Time) error {
	if err := e.putSpan(ctx, "revoke", e.keys.revoked, sub, at, until); err != nil {
		return fmt.Errorf("redis: revoke: %w", err)
	}
	return nil
}

// Revocations implements hub.Cluster: those whose until is after
// Options.Now. It deletes those that ended a while ago.
func (e *Engine) Revocations(ctx context.Context) (map[string]hub.Revocation, error) {
	m, err := e.spans(ctx, "revocations", e.keys.revoked)
	if err != nil {
		return nil, fmt.Errorf("redis: list revocations: %w", err)
	}
	return m, nil
}

// putSpan stores field in the hash key with the span from at to until,
// as "<at> <until>" (Unix ms): a revocation or a kick.
func (e *Engine) putSpan(ctx context.Context, op, key, field string, at, until time.Time) error {
	if e.isClosed() {
		return hub.ErrClosed
	}
	v := strconv.FormatInt(at.UnixMilli(), 10) + " " + strconv.FormatInt(until.UnixMilli(), 10)
	start := time.Now()
	return e.finish(op, start, e.rdb.HSet(ctx, key, field, v).Err())
}

// spans returns the spans of the hash key that run at Options.Now, by
// field, deleting those that ended more than revokedKeep ago and those
// it cannot read.
func (e *Engine) spans(ctx context.Context, op, key string) (map[string]hub.Revocation, error) {
	if e.isClosed() {
		return nil, hub.ErrClosed
	}
	now := e.now()
	res, err := e.run(ctx, op, luaRevocations, []string{key}, now.UnixMilli(), now.Add(-revokedKeep).UnixMilli())
	if err != nil {
		return nil, err
	}
	m, err := pairs(res)
	if err != nil {
		return nil, err
	}
	out := make(map[string]hub.Revocation, len(m))
	for field, v := range m {
		a, u, _ := strings.Cut(string(v), " ")
		at, err1 := strconv.ParseInt(a, 10, 64)
		until, err2 := strconv.ParseInt(u, 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("redis: corrupt entry %q in %s", v, key)
		}
		out[field] = hub.Revocation{At: time.UnixMilli(at), Until: time.UnixMilli(until)}
	}
	return out, nil
}

// checkNode refuses a name no node may have, before anything is sent, and
// calls on a closed engine.
func (e *Engine) checkNode(node string) error {
	if e.isClosed() {
		return hub.ErrClosed
	}
	if node == "" {
		return errors.New("redis: empty node name")
	}
	if strings.IndexByte(node, 0) >= 0 {
		return fmt.Errorf("redis: node name %q holds a NUL byte", node)
	}
	return nil
}

// ttlMillis converts a lease or claim ttl to Redis's milliseconds,
// rounding up so that a positive ttl never becomes zero.
func ttlMillis(ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("redis: ttl %v is not positive", ttl)
	}
	return int64((ttl + time.Millisecond - 1) / time.Millisecond), nil
}

// finish times one command and reports a call cut off by Close as
// hub.ErrClosed, as run does for scripts.
func (e *Engine) finish(op string, start time.Time, err error) error {
	e.m.roundTrip(op, time.Since(start))
	if err != nil && e.shut.Load() {
		return hub.ErrClosed
	}
	return err
}

// pairs reads a script's flat list of names and values.
func pairs(res any) (map[string][]byte, error) {
	v, ok := res.([]any)
	if !ok || len(v)%2 != 0 {
		return nil, fmt.Errorf("redis: unexpected reply %v", res)
	}
	out := make(map[string][]byte, len(v)/2)
	for i := 0; i < len(v); i += 2 {
		k, ok1 := v[i].(string)
		d, ok2 := v[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("redis: unexpected entry %v", v[i:i+2])
		}
		out[k] = []byte(d)
	}
	return out, nil
}
