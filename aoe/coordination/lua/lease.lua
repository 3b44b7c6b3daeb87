-- A run's lease (see aoe/coordination/lease.py): who runs or resumes a run, in one script
-- per step, stamped with the server's TIME so hosts with skewed clocks agree on staleness.
--
-- KEYS[1] the run's lease (hash: token, pid, host, since, heartbeat_at, stale_after_s)
-- ARGV[1] op  ARGV[2] now ('' = the server's TIME)  ARGV[3] token, then the op's own.

local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local key, op, token = KEYS[1], ARGV[1], ARGV[3]
local function fmt(x) return string.format('%.17g', x) end

local held = redis.call('HMGET', key, 'token', 'pid', 'host', 'since', 'heartbeat_at',
  'stale_after_s')
local function holder(head)
  return {head, held[2] or '', held[3] or '', held[4] or '', held[5] or '', held[6] or '',
    fmt(now)}
end

if op == 'acquire' then
  -- ARGV: pid, host, stale_after_s
  local pid, host, stale = ARGV[4], ARGV[5], tonumber(ARGV[6])
  if held[1] and held[1] ~= token and tonumber(held[5]) + tonumber(held[6]) > now then
    return holder('held')
  end
  local since = now
  if held[1] == token then since = tonumber(held[4]) end
  redis.call('HSET', key, 'token', token, 'pid', pid, 'host', host, 'since', fmt(since),
    'heartbeat_at', fmt(now), 'stale_after_s', fmt(stale))
  -- kept a day past staleness for `who held it` messages, then Redis forgets it
  redis.call('EXPIRE', key, math.ceil(stale) + 86400)
  return holder('ok')
elseif op == 'renew' then
  if held[1] ~= token then return holder('lost') end
  redis.call('HSET', key, 'heartbeat_at', fmt(now))
  redis.call('EXPIRE', key, math.ceil(tonumber(held[6])) + 86400)
  return holder('ok')
elseif op == 'release' then
  if held[1] == token then redis.call('DEL', key) end
  return holder('ok')
end
return redis.error_reply('unknown lease op ' .. tostring(op))
