//! The Lua scripts the Redis store runs; each is atomic on the Redis side.
//!
//! Stream ids are `<timestamp>-0`, so ids are built from positions by string concatenation and
//! never go through Lua numbers (doubles) on the way to Redis.

use std::sync::LazyLock;

use redis::Script;

/// Put before every script.
///
/// `stream_ms` reads the millisecond part of a stream id that `XINFO STREAM` reports
/// (`last-generated-id`, `max-deleted-entry-id`), or nil when the stream does not exist. XINFO
/// is used rather than reading the newest entry because these ids outlive the entries.
const HELPERS: &str = r#"
local function id_ms(id)
  return tonumber(string.match(id, '^(%d+)'))
end
local function stream_ms(key, field)
  if redis.call('EXISTS', key) == 0 then return nil end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == field then return id_ms(info[i + 1]) end
  end
  return nil
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{HELPERS}{body}"))
}

/// KEYS[1] the room's stream, KEYS[2] its partition's write-behind queue (declared even when
/// nothing is archived, so a cluster routes the script by the room's slot), KEYS[3] (only with an
/// idempotency key) the key's record; ARGV payload, window ms, max entries (at least 1), the
/// room's channel, room, queue limit (0: no archive behind Redis), deadline in ms since the epoch
/// (0: none), the publish command (`PUBLISH`, or `SPUBLISH` on a cluster), count slack, time
/// slice ms (at least 1), and with a key the message's fingerprint (decimal) and whether a repeat
/// rewrites the key's record (`1`, when replicas must confirm it: see [`crate::replicated`]).
/// Publishes `m<timestamp>:<previous timestamp>:<payload>` on the channel.
///
/// Returns `{timestamp, 0}`, `{first timestamp, 1}` for a repeat, or an error `KEYREUSED`,
/// `EXPIRED` or `BACKLOG`.
///
/// What it costs is what a deployment's publishing costs on its Redis primaries, so it does
/// little on most appends: the newest entry's id (never trimmed) gives the room's last
/// timestamp; trimming and the key's expiry run once per `slack + 1` excess entries and once per
/// `slice` of timestamps, so a room holds at most `max + slack` entries and an entry older than
/// the window lives at most `slice` longer. Slack 0 and slice 1 trim on every append. Readers
/// learn what trimming dropped from the stream's `max-deleted-entry-id`, which stays exact.
/// Numbers become text through `string.format('%d')`: concatenating a Lua number formats it as
/// a float, at several times the cost.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local key, record, payload = KEYS[1], KEYS[3], ARGV[1]
-- A repeat is answered even past the deadline: it changes nothing (a rewrite of the record with
-- itself only gives the connection a write for WAIT to cover).
if record then
  local seen = redis.call('GET', record)
  if seen then
    local fp, first = string.match(seen, '^(%d+):(%d+)$')
    if fp ~= ARGV[11] then
      return redis.error_reply('KEYREUSED the idempotency key was used for another message')
    end
    if ARGV[12] == '1' then
      redis.call('SET', record, seen, 'KEEPTTL')
    end
    return {tonumber(first), 1}
  end
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if ARGV[7] ~= '0' and now > tonumber(ARGV[7]) then
  return redis.error_reply('EXPIRED the publish deadline passed before Redis ran the append')
end
-- Trimming never takes the newest entry, so its id is the newest timestamp the room assigned.
local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
local prev, last = '0', 0
if newest then
  prev = string.match(newest[1], '^%d+')
  last = tonumber(prev)
end
local ts = last + 1
if ts < now then ts = now end
local archive = ARGV[6] ~= '0'
if archive then
  local queue = KEYS[2]
  if redis.call('XLEN', queue) >= tonumber(ARGV[6]) then
    return redis.error_reply('BACKLOG the archive backlog is full')
  end
  -- Queued under now, and ts >= now: every unarchived message is at or after the oldest queue
  -- id (keep_from below). The queue's clock is ahead only when Redis's clock went back: then
  -- follow it.
  if redis.pcall('XADD', queue, string.format('%d-*', now), 'r', ARGV[5], 't', string.format('%d', ts), 'p', payload).err then
    local info = redis.call('XINFO', 'STREAM', queue)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then now = tonumber(string.match(info[i + 1], '^%d+')) end
    end
    if ts < now then ts = now end
    redis.call('XADD', queue, string.format('%d-*', now), 'r', ARGV[5], 't', string.format('%d', ts), 'p', payload)
  end
end
local tss = string.format('%d', ts)
local id = tss .. '-0'
redis.call('XADD', key, id, 'p', payload)
if record then
  redis.call('SET', record, ARGV[11] .. ':' .. tss, 'PX', ARGV[2])
end
-- Trimming runs when the excess over max reaches a multiple of slack + 1 (so at most
-- max + slack entries stay; while keep_from blocks it, it is retried every slack + 1 appends),
-- and on the room's first append in each slice of `slice` ms of timestamps (timestamps grow by
-- at least 1 per append, so fewer than `slice` appends come between two such runs). It drops
-- the entries beyond max and those older than ts - window, never from keep_from (the oldest
-- queue id) on. Slack 0 and slice 1 trim on every append: exactly max, exactly the window.
local over = redis.call('XLEN', key) - tonumber(ARGV[3])
local slack, slice = tonumber(ARGV[9]), tonumber(ARGV[10])
local s = math.floor(ts / slice)
local timed = s ~= math.floor(last / slice)
if timed or (over > slack and over % (slack + 1) == 0) then
  local floor, e = ts - tonumber(ARGV[2])
  if over < 0 then over = 0 end
  if archive then
    -- Only entries before keep_from may go: the count's excess is read, at most 1000 a run,
    -- so a lowered max costs a bounded amount per append.
    local keep_from = tonumber(string.match(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1][1], '^%d+'))
    if keep_from < floor then floor = keep_from end
    if over > 1000 then over = 1000 end
    e = redis.call('XRANGE', key, '-', string.format('(%d-0', keep_from), 'COUNT', over + 1)
  else
    -- The excess but its newest goes unread; that newest is then the oldest entry.
    if over > 1 then
      redis.call('XTRIM', key, 'MAXLEN', '=', string.format('%d', tonumber(ARGV[3]) + 1))
      over = 1
    end
    e = redis.call('XRANGE', key, '-', '+', 'COUNT', over + 1)
  end
  -- e: the count's excess, oldest first, then the entry after it. Readers compare
  -- max-deleted-entry-id with their position to learn that messages are gone: XDEL records it,
  -- XTRIM (Redis 7.0) does not, so XSETID follows XTRIM.
  local drop
  if #e > over and tonumber(string.match(e[over + 1][1], '^%d+')) < floor then
    drop = redis.call('XREVRANGE', key, string.format('(%d-0', floor), '-', 'COUNT', 1)[1][1]
  elseif over == 1 and #e > 0 then
    redis.call('XDEL', key, e[1][1])
  elseif over > 1 and #e > 0 then
    drop = e[math.min(over, #e)][1]
  end
  if drop then
    redis.call('XTRIM', key, 'MINID', '=', string.match(drop, '^%d+') .. '-1')
    redis.call('XSETID', key, id, 'MAXDELETEDID', drop)
  end
end
-- Expiry is set once per slice, to the slice's end plus the window (an hour more with an
-- archive behind): the key goes between a window and a window + slice after its last message.
if timed then
  local window = tonumber(ARGV[2])
  if archive then window = window + 3600000 end
  redis.call('PEXPIREAT', key, string.format('%d', (s + 1) * slice + window))
end
redis.call(ARGV[8], ARGV[4], 'm' .. tss .. ':' .. prev .. ':' .. payload)
return {ts, 0}
"#,
    )
});

/// KEYS[1] an idempotency key's record. Rewrites the record with itself (same value, same
/// expiry), so the connection that runs this has written after the record's first append and a
/// `WAIT` on it covers that append (see [`crate::replicated`]). Returns the record, or nil.
pub static REWRITE_RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local seen = redis.call('GET', KEYS[1])
if seen then
  redis.call('SET', KEYS[1], seen, 'KEEPTTL')
end
return seen
"#,
    )
});

/// KEYS[1] the room's stream; ARGV after (exclusive), until (inclusive, or '+'), most messages,
/// most payload bytes (the page stops after the message that passes them).
/// Returns `{truncated (0/1), more (0/1), {{id, payload}, ...} oldest first}`.
pub static READ_PAGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  return {0, 0, {}}
end
local after, upper = ARGV[1], ARGV[2]
local count, bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
if upper ~= '+' then upper = upper .. '-0' end
local out, total, more = {}, 0, 0
local from = '(' .. after .. '-0'
-- Read in growing batches, so a page of large payloads stops early inside Redis instead of
-- copying a whole count's worth; each batch asks for one more than it may keep, to learn
-- whether more follow.
local step = 16
while more == 0 do
  local want = count - #out
  if total >= bytes then want = 0 end
  local batch = math.min(want, step) + 1
  local entries = redis.call('XRANGE', key, from, upper, 'COUNT', batch)
  for _, e in ipairs(entries) do
    if #out >= count or total >= bytes then
      more = 1
      break
    end
    out[#out + 1] = {e[1], e[2][2]}
    total = total + string.len(e[2][2])
  end
  if #entries < batch then break end
  from = '(' .. entries[#entries][1]
  step = math.min(step * 2, 512)
end
local truncated = 0
local deleted = stream_ms(key, 'max-deleted-entry-id')
if deleted and deleted > tonumber(after) then truncated = 1 end
return {truncated, more, out}
"#,
    )
});

/// KEYS[1] the room's stream; ARGV after (exclusive), until (inclusive, or '+'), most messages.
/// Returns `{start id, or '' when at most that many are in range; dropped (0/1): retention
/// dropped something after `after`}`. Only ids leave Redis, never payloads.
pub static REPLAY_START: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  return {'', 0}
end
local after, upper, max = ARGV[1], ARGV[2], tonumber(ARGV[3])
if upper ~= '+' then upper = upper .. '-0' end
local start = ''
-- A room holding no more than the cap cannot exceed it in any range: skip the walk.
if redis.call('XLEN', key) > max then
  local entries = redis.call('XREVRANGE', key, upper, '(' .. after .. '-0', 'COUNT', max + 1)
  if #entries > max then start = entries[#entries][1] end
end
local dropped = 0
local deleted = stream_ms(key, 'max-deleted-entry-id')
if deleted and deleted > tonumber(after) then dropped = 1 end
return {start, dropped}
"#,
    )
});

/// KEYS[1] the room's stream. Returns the newest timestamp ever assigned, or 0.
pub static LAST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
return stream_ms(KEYS[1], 'last-generated-id') or 0
"#,
    )
});

/// KEYS[1] the session hash; ARGV room, cursor value, most rooms, session window ms.
/// Returns 0 added, 1 already there (cursor kept), 2 full (nothing changed).
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key, room, value, max = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local result = 0
if redis.call('HEXISTS', key, room) == 1 then
  result = 1
elseif redis.call('HLEN', key) >= max then
  result = 2
else
  redis.call('HSET', key, room, value)
end
redis.call('PEXPIRE', key, ARGV[4])
return result
"#,
    )
});

/// KEYS[1] the session hash; ARGV session window ms, then room, handled position, listened (0/1)
/// triples. Moves each listed room's handled position forward, never back, and marks it
/// listened, never unmarks it; ignores rooms not in the session. Reads cursors written before
/// the listened flag existed (`<joined_at>:<acked>`).
pub static ADVANCE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = KEYS[1]
for i = 2, #ARGV, 3 do
  local room, handled, listened = ARGV[i], ARGV[i + 1], ARGV[i + 2] == '1'
  local current = redis.call('HGET', key, room)
  if current then
    local joined, acked, rest = string.match(current, '^(%d+):(%d+)(.*)$')
    if joined then
      listened = listened or rest == ':1'
      if tonumber(handled) <= tonumber(acked) then handled = acked end
      local value = joined .. ':' .. handled
      if listened then value = value .. ':1' end
      if value ~= current then redis.call('HSET', key, room, value) end
    end
  end
end
if redis.call('EXISTS', key) == 1 then
  redis.call('PEXPIRE', key, ARGV[1])
end
return 0
"#,
    )
});

/// Presence scripts share this: the current time on Redis's clock, the key of a member in its
/// partition's expiry set (`<room length>:<room><member id>`), and how a batch of changes to one
/// room is published on the room's channel: `p` then, per change, its code (`e`, `u`, `l`),
/// `<id length>:<id>` and `<info length>:<info>`.
const PRESENCE_HELPERS: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function entry(room, id)
  return string.len(room) .. ':' .. room .. id
end
local function batch()
  return {'p'}
end
local function add(out, code, id, info)
  out[#out + 1] = code .. string.len(id) .. ':' .. id .. string.len(info) .. ':' .. info
end
"#;

fn presence_script(body: &str) -> Script {
    Script::new(&format!("{PRESENCE_HELPERS}{body}"))
}

/// KEYS[1] the room's member hash, KEYS[2] its partition's expiry set; ARGV room, ttl ms, most
/// members, the room's channel, the publish command, then per change its code (`e` to enter or
/// update, `l` to leave), member id and info (empty for a leave). Applies the changes in order
/// and publishes those that took effect as one batch. Returns the ids of newcomers refused
/// because the room was full.
pub static PRESENCE_APPLY: LazyLock<Script> = LazyLock::new(|| {
    presence_script(
        r#"
local members, expiry = KEYS[1], KEYS[2]
local room, ttl, max, channel = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local publish = ARGV[5]
local now = now_ms()
local out = batch()
local changed, refused = false, {}
for i = 6, #ARGV, 3 do
  local op, id, info = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == 'e' then
    local code = 'e'
    if redis.call('HEXISTS', members, id) == 1 then
      local score = redis.call('ZSCORE', expiry, entry(room, id))
      if score and tonumber(score) > now then code = 'u' end
    elseif redis.call('HLEN', members) >= max then
      code = nil
      refused[#refused + 1] = id
    end
    if code then
      redis.call('HSET', members, id, info)
      redis.call('ZADD', expiry, now + ttl, entry(room, id))
      add(out, code, id, info)
      changed = true
    end
  else
    local old = redis.call('HGET', members, id)
    if old then
      redis.call('HDEL', members, id)
      redis.call('ZREM', expiry, entry(room, id))
      add(out, 'l', id, old)
      changed = true
    end
  end
end
if changed then redis.call(publish, channel, table.concat(out)) end
return refused
"#,
    )
});

/// KEYS[1] the room's member hash, KEYS[2] the expiry set; ARGV room. Returns the unexpired
/// members as `{id, info, id, info, ...}`.
pub static PRESENCE_MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    presence_script(
        r#"
local members, expiry, room = KEYS[1], KEYS[2], ARGV[1]
local now = now_ms()
local all = redis.call('HGETALL', members)
local out = {}
for i = 1, #all, 2 do
  local score = redis.call('ZSCORE', expiry, entry(room, all[i]))
  if score and tonumber(score) > now then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"#,
    )
});

/// KEYS[1] the expiry set; ARGV ttl ms, then room, member id pairs. Extends the listed members
/// that are still present.
pub static PRESENCE_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    presence_script(
        r#"
local expiry = KEYS[1]
local deadline = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', expiry, 'XX', deadline, entry(ARGV[i], ARGV[i + 1]))
end
return 0
"#,
    )
});

/// KEYS[1] a partition's expiry set; ARGV its member hash key prefix, its channel prefix, the
/// publish command, most members to drop. Drops expired members, publishing them as leaving,
/// one batch per room. Returns how many it dropped.
pub static PRESENCE_EXPIRE: LazyLock<Script> = LazyLock::new(|| {
    presence_script(
        r#"
local expiry, prefix, channels, publish = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[4]))
local batches, rooms = {}, {}
for _, e in ipairs(gone) do
  redis.call('ZREM', expiry, e)
  local len, rest = string.match(e, '^(%d+):(.*)$')
  if len then
    local room = string.sub(rest, 1, tonumber(len))
    local id = string.sub(rest, tonumber(len) + 1)
    local info = redis.call('HGET', prefix .. room, id)
    if info then
      redis.call('HDEL', prefix .. room, id)
      if not batches[room] then
        batches[room] = batch()
        rooms[#rooms + 1] = room
      end
      add(batches[room], 'l', id, info)
    end
  end
end
for _, room in ipairs(rooms) do
  redis.call(publish, channels .. room, table.concat(batches[room]))
end
return #gone
"#,
    )
});

/// KEYS[1] the fleet's hash (node → `<expires ms>:<announcement>`); ARGV the node, its
/// announcement, its time to live in ms. Records the announcement, drops the nodes whose time
/// ran out (on Redis's clock, so the nodes' clocks need not agree), and returns the others as
/// `{node, announcement, ...}`.
pub static FLEET_ANNOUNCE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + tonumber(ARGV[3])) .. ':' .. ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local sep = string.find(all[i + 1], ':', 1, true)
  local until_ms = sep and tonumber(string.sub(all[i + 1], 1, sep - 1))
  if until_ms and until_ms > now then
    live[#live + 1] = all[i]
    live[#live + 1] = string.sub(all[i + 1], sep + 1)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
"#,
    )
});
