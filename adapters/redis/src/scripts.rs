//! The Lua scripts the Redis store runs; each is atomic on the Redis side.

use std::sync::LazyLock;

use redis::Script;

/// KEYS[1] the room's stream; ARGV payload, window ms, max entries, feed channel, room.
/// Returns the new message's timestamp.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = 0
if redis.call('EXISTS', key) == 1 then
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last = tonumber(string.match(info[i + 1], '^(%d+)'))
    end
  end
end
local ts = math.max(now, last + 1)
local id = string.format('%d', ts)
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
redis.call('XADD', key, id .. '-0', 'p', ARGV[1])
-- Trim from the front: entries older than the window, then beyond the count. The newest
-- trimmed id is recorded as the stream's max-deleted-entry-id, which readers compare with
-- their position to know whether something they would need is gone.
local dropped = nil
local old = redis.call('XREVRANGE', key, '(' .. string.format('%d', ts - window) .. '-0', '-', 'COUNT', 1)
if #old > 0 then dropped = tonumber(string.match(old[1][1], '^(%d+)')) end
local len = redis.call('XLEN', key)
if len > max then
  local over = redis.call('XRANGE', key, '-', '+', 'COUNT', len - max)
  local d = tonumber(string.match(over[#over][1], '^(%d+)'))
  if not dropped or d > dropped then dropped = d end
end
if dropped then
  redis.call('XTRIM', key, 'MINID', '=', string.format('%d', dropped + 1) .. '-0')
  redis.call('XSETID', key, id .. '-0', 'MAXDELETEDID', string.format('%d', dropped) .. '-0')
end
redis.call('PEXPIRE', key, window)
redis.call('PUBLISH', ARGV[4], id .. ':' .. string.len(ARGV[5]) .. ':' .. ARGV[5] .. ARGV[1])
return ts
"#,
    )
});

/// KEYS[1] the room's stream; ARGV after (exclusive), until (inclusive, or '+'), limit.
/// Returns {truncated (0/1), {{id, payload}, ...} newest first}.
pub static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
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
local info = redis.call('XINFO', 'STREAM', key)
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then
    local deleted = tonumber(string.match(info[i + 1], '^(%d+)'))
    if deleted and deleted > tonumber(after) then truncated = 1 end
  end
end
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
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    return tonumber(string.match(info[i + 1], '^(%d+)'))
  end
end
return 0
"#,
    )
});

/// KEYS[1] the session hash; ARGV session window ms, then room, position pairs. Moves each listed
/// room's acknowledged position forward, never back; ignores rooms not in the session.
pub static ADVANCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
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
