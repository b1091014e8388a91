package redis

import goredis "github.com/redis/go-redis/v9"

// The log lives in six keys that share one hash tag, so that a Cluster
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
//	{prefix}:log:presence  list: the retained presence updates, in Seq
//	               order, each as "<Seq>:<a>:<t>:<update id>" (the fields
//	               of its entry), so that retention finds the oldest of
//	               them and drops it without reading the log
//	{prefix}:log:dropped   hash: the watermarks of retention: other (the
//	               highest Seq dropped of an update that is not a presence
//	               one) and presence (the highest Seq of a presence update
//	               dropped). Readers compare their position with them to
//	               tell Range.Gap and Range.PresenceGap.
//
// Every script reads and writes them together, so that the index never
// names a trimmed entry and a reader never sees one key ahead of another.
// Scripts check everything that could fail before their first write: Redis
// does not roll back a script that fails half-way.
//
// The scripts that trim take the keys as luaAppend does: meta, log, ids,
// dups, presence list, watermarks.

// luaWatermarks reads the watermarks. A log written before they were kept
// was only ever trimmed from the front, of updates that are not presence
// ones: everything before its first entry is dropped (or everything up to
// the head when it has none).
const luaWatermarks = `
local function watermarks(dropped, log, meta)
  local v = redis.call('HMGET', dropped, 'other', 'presence')
  local other = tonumber(v[1])
  if not other then
    local f = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
    if #f > 0 then
      other = tonumber(string.sub(f[1][1], 1, -3)) - 1
    else
      other = tonumber(redis.call('HGET', meta, 'seq')) or 0
    end
  end
  return other, tonumber(v[2]) or 0
end
`

// luaTrim drops what retention drops, and its index entries, at most
// budget entries per call so that its work per call is bounded, and
// returns how many it dropped. Presence updates are counted apart
// (hub.Retention):
//
//   - from the front of the log, while more than maxCount updates that are
//     not presence ones are retained, or the front entry is older than
//     cutoff (Unix ms; 0 means no age bound). Presence updates at the front
//     go with the update behind them, so the log keeps one oldest end. The
//     stream is cut with XTRIM MINID.
//   - from the front of the presence list, while it holds more than maxPres
//     entries or its oldest is older than cutoff. These are in the middle
//     of the log, deleted with XDEL; nothing else moves.
//
// Each drop raises the watermark of its kind, in the same script, so that
// every node's reads see the drop and the watermark together. The work is
// a few commands per entry dropped, never a walk through what stays.
//
// An entry appended less than grace ms ago stays whatever retention says,
// of either kind: every node's feed reads the log after the append, and an
// entry trimmed before a node read it would be a skip on that node's live
// streams. So a history smaller than a burst of appends holds the burst
// for a moment.
const luaTrim = luaWatermarks + `
local function unindex(ids, dups, id, seq)
  local s = redis.call('HGET', ids, id)
  if not s then return end
  local ss = string.format('%d', seq)
  local d = redis.call('HGET', dups, id)
  if s == ss then
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
    return
  end
  -- A later occurrence dropped before the earliest one: a presence
  -- update dropped from the middle of the log.
  if not d then return end
  local pat = ',' .. ss .. ','
  local i = string.find(',' .. d, pat, 1, true)
  if not i then return end
  local rest = string.sub(d, 1, i - 1) .. string.sub(d, i + #pat - 1)
  if rest == '' then
    redis.call('HDEL', dups, id)
  else
    redis.call('HSET', dups, id, rest)
  end
end

-- pentry reads an element of the presence list: the Seq, append time,
-- update time and id of a presence entry, or nothing for an element it
-- cannot read.
local function pentry(p)
  if not p then return nil end
  local seq, a, t, id = string.match(p, '^(%d+):(%d+):(%-?%d+):(.*)$')
  if not seq then return nil end
  return tonumber(seq), tonumber(a), tonumber(t), id
end

local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function trim(k, maxCount, maxPres, cutoff, budget, grace)
  local log, pres = k[2], k[5]
  local plen = redis.call('LLEN', pres)
  local over, pover = 0, plen - maxPres
  if maxCount > 0 then
    over = redis.call('XLEN', log) - plen - maxCount
  end
  if over <= 0 and pover <= 0 and cutoff <= 0 then return 0 end
  local other, pgone = watermarks(k[6], log, k[1])
  local young = nowms() - grace
  local dropped = 0

  -- The front of the log. Entries are fetched as they are needed: the
  -- front one alone first, to test its age and grace, then as many as
  -- are still over the count, twice as many each time presence entries
  -- come between, so that a front held back by grace or young enough
  -- costs one entry, not a budget's worth.
  if over > 0 or cutoff > 0 then
    local phead = pentry(redis.call('LINDEX', pres, 0))
    local last, from, want = nil, '-', 1
    while dropped < budget do
      local es = redis.call('XRANGE', log, from, '+', 'COUNT', math.min(budget - dropped, want))
      if #es == 0 then break end
      local stop = false
      for _, e in ipairs(es) do
        local f = e[2]
        if (over <= 0 and tonumber(f[4]) >= cutoff) or tonumber(f[10]) > young then
          stop = true
          break
        end
        local seq = tonumber(string.sub(e[1], 1, -3))
        -- Seqs below the front are no longer in the log: dropped by
        -- something that did not keep the list (a node of an older
        -- version).
        while phead and phead < seq do
          redis.call('LPOP', pres)
          pgone = math.max(pgone, phead)
          phead = pentry(redis.call('LINDEX', pres, 0))
        end
        if phead == seq then
          redis.call('LPOP', pres)
          phead = pentry(redis.call('LINDEX', pres, 0))
          pover = pover - 1
          pgone = math.max(pgone, seq)
        else
          over = over - 1
          other = math.max(other, seq)
        end
        unindex(k[3], k[4], f[2], seq)
        last = seq
        dropped = dropped + 1
      end
      if stop then break end
      from = string.format('(%d-0', last)
      want = math.max(over, 2 * want)
    end
    if last then
      redis.call('XTRIM', log, 'MINID', string.format('%d-0', last + 1))
    end
  end

  -- The front of the presence list, from the middle of the log.
  local del = {}
  while dropped < budget and (pover > 0 or cutoff > 0) do
    local ps = redis.call('LRANGE', pres, 0, math.min(budget - dropped, math.max(pover, 1)) - 1)
    if #ps == 0 then break end
    local taken, stop = 0, false
    for _, p in ipairs(ps) do
      local seq, a, t, id = pentry(p)
      if seq then
        if a > young or (pover <= 0 and (cutoff <= 0 or t >= cutoff)) then
          stop = true
          break
        end
        -- An element whose entry is no longer in the log (dropped by
        -- a node of an older version) costs nothing more: XDEL skips
        -- it, and unindex finds its id naming another Seq or none.
        table.insert(del, string.format('%d-0', seq))
        unindex(k[3], k[4], id, seq)
        pgone = math.max(pgone, seq)
      end
      taken = taken + 1
      pover = pover - 1
      dropped = dropped + 1
    end
    if taken > 0 then
      redis.call('LTRIM', pres, taken, -1)
    end
    if stop then break end
  end
  if #del > 0 then
    redis.call('XDEL', log, unpack(del))
  end
  if dropped > 0 then
    redis.call('HSET', k[6], 'other', string.format('%d', other), 'presence', string.format('%d', pgone))
  end
  return dropped
end
`

// luaNewLog starts a log named by epoch. Seqs go on after the stream's last
// id, which outlives trimmed entries (XADD refuses ids at or below it): a
// stream that lost its meta key (evicted, deleted by hand) keeps its
// entries under the new epoch. origin is where the new log's feed starts,
// onon the nonce there. The presence list and the watermarks go with the
// stream: kept with it, reset without it.
const luaNewLog = `
local function newlog(meta, log, pres, dropped, epoch)
  local seq, nonce = 0, epoch
  if redis.call('EXISTS', log) == 1 then
    local info = redis.call('XINFO', 'STREAM', log)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then seq = tonumber(string.sub(info[i + 1], 1, -3)) end
    end
    local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
    if #top > 0 and tonumber(string.sub(top[1][1], 1, -3)) == seq then nonce = top[1][2][6] end
  else
    redis.call('DEL', pres)
    redis.call('HSET', dropped, 'other', 0, 'presence', 0)
  end
  redis.call('HSET', meta, 'epoch', epoch, 'seq', seq, 'nonce', nonce, 'origin', seq, 'onon', nonce)
  return seq, nonce
end
`

// luaInit makes sure the log has an epoch: an empty Redis gets a new log
// named by ARGV[1]. It returns the epoch, the head and the head's nonce,
// and where the log's feed starts (its origin) and the nonce there.
//
// KEYS: meta, log, presence list, watermarks. ARGV: candidate epoch.
var luaInit = goredis.NewScript(luaNewLog + `
local meta, log = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[1]
  newlog(meta, log, KEYS[3], KEYS[4], epoch)
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
// KEYS: meta, log, ids, dups, presence list, watermarks. ARGV: candidate
// epoch, max count, max presence, cutoff (Unix ms, 0 for none), grace
// (ms), deadline (Unix ms), then id, time, nonce, record, presence ("1"
// or "0") for each update.
var luaAppend = goredis.NewScript(luaTrim + luaNewLog + `
local meta, log, ids, dups, pres = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if nowms() > tonumber(ARGV[6]) then
  return redis.error_reply('LATE the append reached Redis after its deadline; nothing was written')
end
local v = redis.call('HMGET', meta, 'epoch', 'seq', 'nonce')
local epoch, seq, nonce = v[1], tonumber(v[2]), v[3]
if not epoch then
  epoch = ARGV[1]
  seq, nonce = newlog(meta, log, pres, KEYS[6], epoch)
end
local first = seq + 1
local now = nowms()
local ps = {}
for i = 7, #ARGV, 5 do
  seq = seq + 1
  local id = ARGV[i]
  local prev = nonce
  nonce = ARGV[i + 2]
  redis.call('XADD', log, string.format('%d-0', seq), 'i', id, 't', ARGV[i + 1], 'n', nonce, 'd', ARGV[i + 3], 'a', now, 'p', prev)
  if redis.call('HSETNX', ids, id, seq) == 0 then
    redis.call('HSET', dups, id, (redis.call('HGET', dups, id) or '') .. string.format('%d,', seq))
  end
  if ARGV[i + 4] == '1' then
    table.insert(ps, string.format('%d:%d:%s:%s', seq, now, ARGV[i + 1], id))
  end
end
if #ps > 0 then
  redis.call('RPUSH', pres, unpack(ps))
end
redis.call('HSET', meta, 'seq', seq, 'nonce', nonce)
local n = (#ARGV - 6) / 5
trim(KEYS, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), 2 * n + 16, tonumber(ARGV[5]))
return {epoch, first}
`)

// luaTrimIdle trims without appending, so that retention by age holds on
// an idle log. It returns how many entries it dropped.
//
// KEYS: as luaAppend's. ARGV: max count, max presence, cutoff, budget,
// grace.
var luaTrimIdle = goredis.NewScript(luaTrim + `
return trim(KEYS, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
`)

// luaRead reads the log after a Seq, in one epoch. It returns the epoch
// (empty when there is no log), the head, up to ARGV[3] entries after
// ARGV[2] when the epoch is ARGV[1], and the watermarks (see luaTrim) as
// of the same moment, so that what a read says was dropped matches what
// it returns. At or past the head nothing after it can have been dropped,
// and the watermarks are not read.
//
// KEYS: meta, log, watermarks. ARGV: epoch, after, limit.
var luaRead = goredis.NewScript(luaWatermarks + `
local v = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not v[1] or v[1] ~= ARGV[1] then return {v[1] or '', 0, {}, 0, 0} end
if tonumber(ARGV[2]) >= tonumber(v[2]) then return {v[1], v[2], {}, 0, 0} end
local es = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
local other, pgone = watermarks(KEYS[3], KEYS[2], KEYS[1])
return {v[1], v[2], es, other, pgone}
`)

// luaFeed is luaRead for the live feed, which also checks that the log is
// still the one it fed from: the entry at the last Seq fed must still carry
// the nonce it had. A log that went back (a failover to a replica that
// missed the last writes) and perhaps grew again under the same epoch is a
// different log: the script says so with status "rewritten", and the node
// names it with luaRewritten.
//
// The feed also learns the watermark of updates that are not presence
// ones: entries missing between the last Seq fed and the first it reads
// are a skip only when one of those was dropped; presence updates dropped
// from the middle of the log are not (see feedEntries).
//
// KEYS: meta, log, watermarks. ARGV: epoch, after, limit, nonce of after.
// Returns status ("ok", "epoch" or "rewritten"), epoch, head, entries,
// watermark of the others.
var luaFeed = goredis.NewScript(luaWatermarks + `
local meta, log = KEYS[1], KEYS[2]
local v = redis.call('HMGET', meta, 'epoch', 'seq')
if not v[1] or v[1] ~= ARGV[1] then return {'epoch', v[1] or '', v[2] or 0, {}, 0} end
local after, head = tonumber(ARGV[2]), tonumber(v[2])
local rewritten = head < after
if not rewritten and after > 0 and ARGV[4] ~= '' then
  local at = redis.call('XRANGE', log, ARGV[2] .. '-0', ARGV[2] .. '-0')
  rewritten = #at > 0 and at[1][2][6] ~= ARGV[4]
end
if rewritten then return {'rewritten', v[1], v[2], {}, 0} end
local es, other = {}, 0
if after < head then
  es = redis.call('XRANGE', log, '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
  other = watermarks(KEYS[3], log, meta)
end
return {'ok', v[1], v[2], es, other}
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
