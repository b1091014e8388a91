package redis

import (
	"context"
	"crypto/sha1" //nolint:gosec // a key's name, not a secret
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/herald-hub/herald/hub"
)

// Subscribers in their grace period (hub.Cluster's Park, TakeParked and
// Unpark) are kept in one list per key, oldest first, under the key's
// hash: keys hold a token's issuer, subject and matchers, which can be
// long. An entry is "<until ms>\x00<node>\x00<id>"; node names hold no NUL
// (checkNode). Entries whose period has ended are dropped as the scripts
// meet them, and the list expires with its newest entry.

// luaPark appends an entry and keeps the list until its newest entry's
// period ends.
//
// KEYS: the list. ARGV: entry, until (ms).
var luaPark = goredis.NewScript(`
redis.call('RPUSH', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local want = tonumber(ARGV[2]) - now
if want < 1 then want = 1 end
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1
`)

// luaTakeParked takes the first entry whose period has not ended, whose
// node is not the caller and whose node's lease exists; it drops the
// ended entries it meets. It returns node and id, or nil.
//
// KEYS: the list. ARGV: the caller, the lease key prefix.
var luaTakeParked = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local a = string.find(e, '\0', 1, true)
  local b = a and string.find(e, '\0', a + 1, true)
  if not b then
    redis.call('LREM', KEYS[1], 1, e)
  else
    local untilms = tonumber(string.sub(e, 1, a - 1)) or 0
    local node = string.sub(e, a + 1, b - 1)
    if untilms <= now then
      redis.call('LREM', KEYS[1], 1, e)
    elseif node ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. node) == 1 then
      redis.call('LREM', KEYS[1], 1, e)
      return {node, string.sub(e, b + 1)}
    end
  end
end
return false
`)

// luaUnpark removes node's entry for id and reports whether there was one.
//
// KEYS: the list. ARGV: "\x00<node>\x00<id>", the entry's tail.
var luaUnpark = goredis.NewScript(`
local tail = ARGV[1]
for _, e in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if #e > #tail and string.sub(e, -#tail) == tail and not string.find(string.sub(e, 1, #e - #tail), '\0', 1, true) then
    redis.call('LREM', KEYS[1], 1, e)
    return 1
  end
end
return 0
`)

func (e *Engine) parkedKey(key string) string {
	sum := sha1.Sum([]byte(key)) //nolint:gosec // a name, not a secret
	return e.keys.parked + hex.EncodeToString(sum[:])
}

// Park implements hub.Cluster.
func (e *Engine) Park(ctx context.Context, key, node, id string, until time.Time) error {
	if err := e.checkNode(node); err != nil {
		return err
	}
	if key == "" || id == "" || strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("redis: park: empty key, or an empty or NUL-holding id")
	}
	ms := until.UnixMilli()
	entry := strconv.FormatInt(ms, 10) + "\x00" + node + "\x00" + id
	if _, err := e.run(ctx, "park", luaPark, []string{e.parkedKey(key)}, entry, ms); err != nil {
		return fmt.Errorf("redis: park: %w", err)
	}
	return nil
}

// TakeParked implements hub.Cluster.
func (e *Engine) TakeParked(ctx context.Context, key, by string) (node, id string, ok bool, err error) {
	if e.isClosed() {
		return "", "", false, hub.ErrClosed
	}
	res, err := e.run(ctx, "take_parked", luaTakeParked, []string{e.parkedKey(key)}, by, e.keys.lease)
	if err != nil {
		if errors.Is(err, goredis.Nil) { // none to take
			return "", "", false, nil
		}
		return "", "", false, fmt.Errorf("redis: take a parked subscriber: %w", err)
	}
	v, isList := res.([]any)
	if !isList || len(v) != 2 {
		return "", "", false, nil
	}
	node, _ = v[0].(string)
	id, _ = v[1].(string)
	return node, id, node != "" && id != "", nil
}

// Unpark implements hub.Cluster.
func (e *Engine) Unpark(ctx context.Context, key, node, id string) (bool, error) {
	if err := e.checkNode(node); err != nil {
		return false, err
	}
	res, err := e.run(ctx, "unpark", luaUnpark, []string{e.parkedKey(key)}, "\x00"+node+"\x00"+id)
	if err != nil {
		return false, fmt.Errorf("redis: unpark: %w", err)
	}
	n, _ := res.(int64)
	return n == 1, nil
}
