package redis

import goredis "github.com/redis/go-redis/v9"

// The log lives in four keys that share one hash tag, so that a Cluster
// keeps them in one slot and every script runs on one node:
//
//	{prefix}:meta  hash: epoch (decimal), seq (last Seq given), nonce (of seq,
//	               or, before the first entry, the epoch)
//	{prefix}:log   stream: one entry per update, id "<Seq>-0", fields
//	               i (update id), t (update time, Unix ms), n (nonce),
//	               d (record), a (append time, Redis clock, Unix ms),
//	               p (the nonce before it: the previous entry's, or the epoch)
//
// Nonces chain the entries: a node that fed an entry with nonce x knows the
// next entry it reads follows it in the same log if that entry's p is x.
// That lets the feed take what a blocking XREAD returns without another
// round trip, and tells it when the log under it was replaced.
//	{prefix}:ids   hash: update id -> Seq of its earliest retained occurrence
//	{prefix}:dups  hash: update id -> "s1,s2,": later retained occurrences,
//	               only for ids that occur more than once
//
// Every script reads and writes them together, so that the index never
// names a trimmed entry and a reader never sees one key ahead of another.
// Scripts check everything that could fail before their first write: Redis
// does not roll back a script that fails half-way.

// luaTrim drops entries from the front of the log, and their index
// entries, while the log is longer than maxCount or the front entry is
// older than cutoff (Unix ms; 0 means no age bound). It drops at most
// budget entries, so its work per call is bounded, and returns how many it
// dropped. Entries are trimmed in Seq order, so the one dropped is always
// the earliest retained occurrence of its id.
//
// An entry appended less than grace ms ago stays whatever retention says:
// every node's feed reads the log after the append, and an entry trimmed
// before a node read it would be a skip on that node's live streams. So
// a history smaller than a burst of appends holds the burst for a moment.
const luaTrim = `
local function unindex(ids, dups, id, seq)
  local s = redis.call('HGET', ids, id)
  if s ~= tostring(seq) then return end
  local d = redis.call('HGET', dups, id)
  if not d then
    redis.call('HDEL', ids, id)
    return
  end
  local c = string.find(d, ',', 1, true)
  redis.call('HSET', ids, id, string.sub(d, 1, c - 1))
  if c == #d then
    redis.call('HDEL', dups, id)
  else
    redis.call('HSET', dups, id, string.sub(d, c + 1))
  end
end

local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function trim(log, ids, dups, maxCount, cutoff, budget, grace)
  local over = 0
  if maxCount > 0 then
    over = redis.call('XLEN', log) - maxCount
  end
  if over <= 0 and cutoff <= 0 then return 0 end
  local dropped, last, from = 0, nil, '-'
  local young = nowms() - grace
  -- Entries are fetched as they are needed: those over the count, or the
  -- front one alone to test its age, so that a history with nothing to
  -- drop by age costs one entry, not a budget's worth.
  while dropped < budget do
    local es = redis.call('XRANGE', log, from, '+', 'COUNT', math.min(budget - dropped, math.max(over, 1)))
    if #es == 0 then break end
    local stop = false
    for _, e in ipairs(es) do
      local f = e[2]
      if (over <= 0 and tonumber(f[4]) >= cutoff) or tonumber(f[10]) > young then
        stop = true
        break
      end
      local seq = tonumber(string.sub(e[1], 1, -3))
      unindex(ids, dups, f[2], seq)
      last = seq
      dropped = dropped + 1
      over = over - 1
    end
    if stop then break end
    from = string.format('(%d-0', last)
  end
  if last then
    redis.call('XTRIM', log, 'MINID', string.format('%d-0', last + 1))
  end
  return dropped
end
`

// luaNewLog starts a log named by epoch. Seqs go on after the stream's last
// id, which outlives trimmed entries (XADD refuses ids at or below it): a
// stream that lost its meta key (evicted, deleted by hand) keeps its
// entries under the new epoch. origin is where the new log's feed starts,
// onon the nonce there.
const luaNewLog = `
local function newlog(meta, log, epoch)
  local seq, nonce = 0, epoch
  if redis.call('EXISTS', log) == 1 then
    local info = redis.call('XINFO', 'STREAM', log)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then seq = tonumber(string.sub(info[i + 1], 1, -3)) end
    end
    local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
    if #top > 0 and tonumber(string.sub(top[1][1], 1, -3)) == seq then nonce = top[1][2][6] end
  end
  redis.call('HSET', meta, 'epoch', epoch, 'seq', seq, 'nonce', nonce, 'origin', seq, 'onon', nonce)
  return seq, nonce
end
`

// luaInit makes sure the log has an epoch: an empty Redis gets a new log
// named by ARGV[1]. It returns the epoch, the head and the head's nonce,
// and where the log's feed starts (its origin) and the nonce there.
//
// KEYS: meta, log. ARGV: candidate epoch.
var luaInit = goredis.NewScript(luaNewLog + `
local meta, log = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[1]
  newlog(meta, log, epoch)
end
local v = redis.call('HMGET', meta, 'seq', 'nonce', 'origin', 'onon')
return {epoch, v[1], v[2] or '', v[3] or v[1], v[4] or ''}
`)

// luaAppend appends a batch of updates, giving them the next Seqs, indexes
// their ids and trims what retention drops, at most a bounded number of
// entries per update appended. A Redis without the log (flushed,
// restarted empty) gets a new one named by ARGV[1]; the caller learns it
// from the epoch returned. It returns the epoch and the first Seq given.
//
// An append that reaches Redis after its deadline (Unix ms, Redis clock)
// writes nothing: a node that gave up waiting for the answer can then
// find out for certain whether its append was stored (luaResolve), instead
// of having it appear later.
//
// KEYS: meta, log, ids, dups. ARGV: candidate epoch, max count, cutoff
// (Unix ms, 0 for none), grace (ms), deadline (Unix ms), then id, time,
// nonce, record for each update.
var luaAppend = goredis.NewScript(luaTrim + luaNewLog + `
local meta, log, ids, dups = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if nowms() > tonumber(ARGV[5]) then
  return redis.error_reply('LATE the append reached Redis after its deadline; nothing was written')
end
local v = redis.call('HMGET', meta, 'epoch', 'seq', 'nonce')
local epoch, seq, nonce = v[1], tonumber(v[2]), v[3]
if not epoch then
  epoch = ARGV[1]
  seq, nonce = newlog(meta, log, epoch)
end
local first = seq + 1
local now = nowms()
for i = 6, #ARGV, 4 do
  seq = seq + 1
  local id = ARGV[i]
  local prev = nonce
  nonce = ARGV[i + 2]
  redis.call('XADD', log, string.format('%d-0', seq), 'i', id, 't', ARGV[i + 1], 'n', nonce, 'd', ARGV[i + 3], 'a', now, 'p', prev)
  if redis.call('HSETNX', ids, id, seq) == 0 then
    redis.call('HSET', dups, id, (redis.call('HGET', dups, id) or '') .. string.format('%d,', seq))
  end
end
redis.call('HSET', meta, 'seq', seq, 'nonce', nonce)
local n = (#ARGV - 5) / 4
trim(log, ids, dups, tonumber(ARGV[2]), tonumber(ARGV[3]), 2 * n + 16, tonumber(ARGV[4]))
return {epoch, first}
`)

// luaTrimIdle trims without appending, so that retention by age holds on
// an idle log. It returns how many entries it dropped.
//
// KEYS: meta, log, ids, dups. ARGV: max count, cutoff, budget, grace.
var luaTrimIdle = goredis.NewScript(luaTrim + `
return trim(KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
`)

// luaRead reads the log after a Seq, in one epoch. It returns the epoch
// (empty when there is no log), the head, and up to ARGV[3] entries after
// ARGV[2] when the epoch is ARGV[1].
//
// KEYS: meta, log. ARGV: epoch, after, limit.
var luaRead = goredis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not v[1] or v[1] ~= ARGV[1] then return {v[1] or '', 0, {}} end
local es = {}
if tonumber(ARGV[2]) < tonumber(v[2]) then
  es = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
end
return {v[1], v[2], es}
`)

// luaFeed is luaRead for the live feed, which also checks that the log is
// still the one it fed from: the entry at the last Seq fed must still carry
// the nonce it had. A log that went back (a failover to a replica that
// missed the last writes) and perhaps grew again under the same epoch is a
// different log: the script says so with status "rewritten", and the node
// names it with luaRewritten.
//
// KEYS: meta, log. ARGV: epoch, after, limit, nonce of after.
// Returns status ("ok", "epoch" or "rewritten"), epoch, head, entries.
var luaFeed = goredis.NewScript(`
local meta, log = KEYS[1], KEYS[2]
local v = redis.call('HMGET', meta, 'epoch', 'seq')
if not v[1] or v[1] ~= ARGV[1] then return {'epoch', v[1] or '', v[2] or 0, {}} end
local after, head = tonumber(ARGV[2]), tonumber(v[2])
local rewritten = head < after
if not rewritten and after > 0 and ARGV[4] ~= '' then
  local at = redis.call('XRANGE', log, ARGV[2] .. '-0', ARGV[2] .. '-0')
  rewritten = #at > 0 and at[1][2][6] ~= ARGV[4]
end
if rewritten then return {'rewritten', v[1], v[2], {}} end
local es = {}
if after < head then
  es = redis.call('XRANGE', log, '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
end
return {'ok', v[1], v[2], es}
`)

// luaLookup finds the earliest retained update with an id. It returns the
// epoch (empty when there is no log), the head, and the update's Seq or -1.
//
// KEYS: meta, ids. ARGV: id.
var luaLookup = goredis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local s = redis.call('HGET', KEYS[2], ARGV[1])
return {v[1] or '', v[2] or 0, s or -1}
`)

// luaResolve finds an update by its id and nonce: an append whose answer
// was lost learns from it whether it was stored. It returns the epoch and
// the update's Seq, or -1.
//
// KEYS: meta, log, ids, dups. ARGV: id, nonce.
var luaResolve = goredis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local s = redis.call('HGET', KEYS[3], ARGV[1])
if not s then return {epoch, -1} end
local seqs = {s}
local d = redis.call('HGET', KEYS[4], ARGV[1])
if d then
  for x in string.gmatch(d, '(%d+),') do table.insert(seqs, x) end
end
for i = #seqs, 1, -1 do
  local e = redis.call('XRANGE', KEYS[2], seqs[i] .. '-0', seqs[i] .. '-0')
  if #e > 0 and e[1][2][6] == ARGV[2] then return {epoch, tonumber(seqs[i])} end
end
return {epoch, -1}
`)

// luaRewritten gives a log that went back under epoch ARGV[1] the new epoch
// ARGV[2], so that every node sees the change, and finds where the new log
// parts from the one the node fed: the latest of the (Seq, nonce) pairs
// that follow, newest first, whose entry is still there. The new log's
// feed starts there (its origin); when none is, at the front of what is
// retained. It does nothing when the epoch is no longer ARGV[1]: another
// node named the new log first.
//
// KEYS: meta, log. ARGV: old epoch, new epoch, then Seq, nonce pairs.
var luaRewritten = goredis.NewScript(`
local meta, log = KEYS[1], KEYS[2]
if redis.call('HGET', meta, 'epoch') ~= ARGV[1] then return 0 end
local origin, onon
for i = 3, #ARGV, 2 do
  local at = redis.call('XRANGE', log, ARGV[i] .. '-0', ARGV[i] .. '-0')
  if #at > 0 and at[1][2][6] == ARGV[i + 1] then
    origin, onon = ARGV[i], ARGV[i + 1]
    break
  end
end
if not origin then
  local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #first > 0 then
    origin, onon = tonumber(string.sub(first[1][1], 1, -3)) - 1, first[1][2][12]
  else
    local v = redis.call('HMGET', meta, 'seq', 'nonce')
    origin, onon = v[1], v[2]
  end
end
redis.call('HSET', meta, 'epoch', ARGV[2], 'origin', origin, 'onon', onon)
return 1
`)
