//! The Lua scripts the Redis store runs; each is atomic on the Redis side.

use std::sync::LazyLock;

use redis::Script;

/// Put before every script: the millisecond part of a stream id that `XINFO STREAM` reports
/// (`last-generated-id`, `max-deleted-entry-id`), or nil when the stream does not exist.
const STREAM_MS: &str = r#"
local function stream_ms(key, field)
  if redis.call('EXISTS', key) == 0 then return nil end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == field then return tonumber(string.match(info[i + 1], '^(%d+)')) end
  end
  return nil
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{STREAM_MS}{body}"))
}

/// KEYS[1] the room's stream, KEYS[2] the write-behind queue; ARGV payload, window ms, max
/// entries, feed channel, room, queue limit (0: no archive behind Redis).
/// Returns the new message's timestamp, or an error `BACKLOG` when the queue is full.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key, queue = KEYS[1], KEYS[2]
local payload, window, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local channel, room, queue_max = ARGV[4], ARGV[5], tonumber(ARGV[6])
if queue_max > 0 and redis.call('XLEN', queue) >= queue_max then
  return redis.error_reply('BACKLOG the archive backlog is full')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = stream_ms(key, 'last-generated-id') or 0
local ts = math.max(now, last + 1)
local id = string.format('%d', ts)
redis.call('XADD', key, id .. '-0', 'p', payload)
-- Entries from keep_from on may not be archived yet and must stay. keep_from is the time the
-- oldest queued message was queued (its queue id); a message's timestamp is never before the
-- time it was queued, so every unarchived message is at or after it.
local keep_from = nil
if queue_max > 0 then
  redis.call('XADD', queue, '*', 'r', room, 't', id, 'p', payload)
  local oldest = redis.call('XRANGE', queue, '-', '+', 'COUNT', 1)
  keep_from = tonumber(string.match(oldest[1][1], '^(%d+)'))
end
-- Trim from the front: entries older than the window, then beyond the count. The newest trimmed
-- id is recorded as the stream's max-deleted-entry-id, which readers compare with their
-- position to know whether something they would need is gone.
local function newest_before(bound)
  local e = redis.call('XREVRANGE', key, '(' .. string.format('%d', bound) .. '-0', '-', 'COUNT', 1)
  if #e > 0 then return tonumber(string.match(e[1][1], '^(%d+)')) end
  return nil
end
local floor = ts - window
if keep_from and keep_from < floor then floor = keep_from end
local dropped = newest_before(floor)
local len = redis.call('XLEN', key)
if len > max then
  local over = redis.call('XRANGE', key, '-', '+', 'COUNT', len - max)
  local d = tonumber(string.match(over[#over][1], '^(%d+)'))
  if keep_from and d >= keep_from then d = newest_before(keep_from) end
  if d and (not dropped or d > dropped) then dropped = d end
end
if dropped then
  redis.call('XTRIM', key, 'MINID', '=', string.format('%d', dropped + 1) .. '-0')
  redis.call('XSETID', key, id .. '-0', 'MAXDELETEDID', string.format('%d', dropped) .. '-0')
end
-- An idle room's key goes a window after its last message; with an archive behind, an hour
-- later, so an archive outage of up to an hour does not take unarchived messages with it.
if queue_max > 0 then
  redis.call('PEXPIRE', key, window + 3600000)
else
  redis.call('PEXPIRE', key, window)
end
redis.call('PUBLISH', channel, id .. ':' .. string.len(room) .. ':' .. room .. payload)
return ts
"#,
    )
});

/// KEYS[1] the room's stream; ARGV after (exclusive), until (inclusive, or '+'), limit.
/// Returns {truncated (0/1), {{id, payload}, ...} newest first}.
pub static READ: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  return {0, {}}
end
local after = ARGV[1]
local limit = tonumber(ARGV[3])
local upper = ARGV[2]
if upper ~= '+' then upper = upper .. '-0' end
local entries = redis.call('XREVRANGE', key, upper, '(' .. after .. '-0', 'COUNT', limit + 1)
local truncated = 0
if #entries > limit then
  truncated = 1
  table.remove(entries)
end
local deleted = stream_ms(key, 'max-deleted-entry-id')
if deleted and deleted > tonumber(after) then truncated = 1 end
local out = {}
for i, e in ipairs(entries) do
  out[i] = {e[1], e[2][2]}
end
return {truncated, out}
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

/// KEYS[1] the session hash; ARGV session window ms, then room, position pairs. Moves each listed
/// room's acknowledged position forward, never back; ignores rooms not in the session.
pub static ADVANCE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = KEYS[1]
for i = 2, #ARGV, 2 do
  local current = redis.call('HGET', key, ARGV[i])
  if current then
    local joined, acked = string.match(current, '^(%d+):(%d+)$')
    if joined and tonumber(ARGV[i + 1]) > tonumber(acked) then
      redis.call('HSET', key, ARGV[i], joined .. ':' .. ARGV[i + 1])
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
