-- Budget scopes shared by every process (see aoe/coordination/budgets.py), in one script:
-- a reservation is committed to every scope within its limit, or to none.
--
-- Money is integer pico-dollars, as the ledger stores it. A Lua number (a double) is exact
-- only to 2^53 (about $9,000 in pico-dollars), so amounts travel as decimal strings and are
-- added and compared here as pairs {micro-dollars, pico-dollars below a micro-dollar}:
-- exact to $9 billion.
--
-- KEYS[1] open reservations (zset id -> expiry)  KEYS[2] reservations (hash id -> record)
-- KEYS[3] reservation ids (counter)  KEYS[4..] the scopes' hashes
-- ARGV[1] op  ARGV[2] now ('' = the server's TIME)  ARGV[3] wake channel, then the op's own.
-- A scope hash: limit (absent: none), spent, unconfirmed, reserved, overrun_calls.

local ORIGIN = 1700000000
local UNIT = 1000000

local function parse(s)
  if s == nil or s == false or s == '' then return {0, 0} end
  local neg = string.sub(s, 1, 1) == '-'
  if neg then s = string.sub(s, 2) end
  local hi, lo = 0, tonumber(s)
  if #s > 6 then hi, lo = tonumber(string.sub(s, 1, -7)), tonumber(string.sub(s, -6)) end
  if neg then return {-hi, -lo} end
  return {hi, lo}
end

local function norm(v)
  local hi, lo = v[1], v[2]
  local carry = math.floor(lo / UNIT)
  return {hi + carry, lo - carry * UNIT}
end

local function add(a, b) return norm({a[1] + b[1], a[2] + b[2]}) end
local function sub(a, b) return norm({a[1] - b[1], a[2] - b[2]}) end
local function cmp(a, b)
  a, b = norm(a), norm(b)
  if a[1] ~= b[1] then if a[1] < b[1] then return -1 end return 1 end
  if a[2] ~= b[2] then if a[2] < b[2] then return -1 end return 1 end
  return 0
end

local function text(v)
  v = norm(v)
  if v[1] < 0 then
    local m = sub({0, 0}, v)
    return '-' .. text(m)
  end
  if v[1] == 0 then return string.format('%d', v[2]) end
  return string.format('%d%06d', v[1], v[2])
end

local op = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = (tonumber(t[1]) - ORIGIN) + tonumber(t[2]) / 1e6
end
local channel = ARGV[3]
local open, records, ids = KEYS[1], KEYS[2], KEYS[3]
local SEP = '\31'

local function field(key, name) return parse(redis.call('HGET', key, name)) end

local function split(s, sep)
  local out = {}
  for part in string.gmatch(s, '([^' .. sep .. ']+)') do out[#out + 1] = part end
  return out
end

-- A reservation of a process that stopped renewing it (killed, cut off): its call may have
-- been sent and billed, so what it held becomes unconfirmed spend, as the ledger counts it.
local function sweep()
  local gone = redis.call('ZRANGEBYSCORE', open, '-inf', string.format('%.17g', now))
  for _, id in ipairs(gone) do
    local record = redis.call('HGET', records, id)
    if record then
      local parts = split(record, '|')
      local amount = parse(parts[1])
      for _, key in ipairs(split(parts[2] or '', SEP)) do
        redis.call('HSET', key, 'reserved', text(sub(field(key, 'reserved'), amount)),
          'unconfirmed', text(add(field(key, 'unconfirmed'), amount)))
      end
      redis.call('HDEL', records, id)
    end
    redis.call('ZREM', open, id)
  end
  if #gone > 0 then redis.call('PUBLISH', channel, 'swept') end
end

local function state(key)
  local v = redis.call('HMGET', key, 'limit', 'spent', 'unconfirmed', 'reserved', 'overrun_calls')
  return {v[1] or '', v[2] or '0', v[3] or '0', v[4] or '0', v[5] or ''}
end

local function reply(head, keys)
  for _, key in ipairs(keys) do
    for _, v in ipairs(state(key)) do head[#head + 1] = v end
  end
  return head
end

local scopes = {}
for i = 4, #KEYS do scopes[#scopes + 1] = KEYS[i] end

sweep()

if op == 'reserve' then
  -- ARGV: ttl, amount, then per scope: limit ('' = none), spent before this process
  -- (preloaded only into a scope Redis does not have yet: a resumed run after a flush)
  local ttl, amount = tonumber(ARGV[4]), parse(ARGV[5])
  local a = 6
  for _, key in ipairs(scopes) do
    local limit, preload = ARGV[a], ARGV[a + 1]
    a = a + 2
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'spent', preload, 'unconfirmed', '0', 'reserved', '0')
    end
    if limit == '' then redis.call('HDEL', key, 'limit') else redis.call('HSET', key, 'limit', limit) end
  end
  for i, key in ipairs(scopes) do
    local s = state(key)
    if s[5] ~= '' then return reply({'closed', tostring(i)}, scopes) end
    if s[1] ~= '' then
      local limit = parse(s[1])
      local settled = add(parse(s[2]), parse(s[3]))
      local committed = add(settled, parse(s[4]))
      if cmp(add(committed, amount), limit) > 0 then
        -- only open reservations stand in the way: they may settle lower, so wait
        if cmp(add(settled, amount), limit) <= 0 and cmp(parse(s[4]), {0, 0}) > 0 then
          return reply({'wait', tostring(i)}, scopes)
        end
        return reply({'refused', tostring(i)}, scopes)
      end
    end
  end
  for _, key in ipairs(scopes) do
    redis.call('HSET', key, 'reserved', text(add(field(key, 'reserved'), amount)))
  end
  local id = redis.call('INCR', ids)
  redis.call('HSET', records, id, text(amount) .. '|' .. table.concat(scopes, SEP))
  redis.call('ZADD', open, string.format('%.17g', now + ttl), id)
  return reply({'ok', tostring(id)}, scopes)

elseif op == 'settle' or op == 'release' then
  -- ARGV: id, amount reserved, actual (settle), confirmed 1/0 (settle), the call's name
  local id, amount = ARGV[4], parse(ARGV[5])
  local actual, confirmed, call = parse(ARGV[6]), ARGV[7] == '1', ARGV[8] or ''
  local held = redis.call('HDEL', records, id) == 1
  redis.call('ZREM', open, id)
  for _, key in ipairs(scopes) do
    -- swept already (this process was cut off past its expiry): it is in unconfirmed
    local from = 'reserved'
    if not held then from = 'unconfirmed' end
    redis.call('HSET', key, from, text(sub(field(key, from), amount)))
    if op == 'settle' then
      local into = 'spent'
      if not confirmed then into = 'unconfirmed' end
      redis.call('HSET', key, into, text(add(field(key, into), actual)))
      local s = state(key)
      if s[1] ~= '' and cmp(actual, amount) > 0 then
        local committed = add(add(parse(s[2]), parse(s[3])), parse(s[4]))
        if cmp(committed, parse(s[1])) > 0 then
          local calls = s[5]
          if calls ~= '' then calls = calls .. SEP end
          redis.call('HSET', key, 'overrun_calls', calls .. call)
        end
      end
    end
  end
  redis.call('PUBLISH', channel, 'free')
  return reply({'ok'}, scopes)

elseif op == 'renew' then
  -- ARGV: ttl, ids...
  local ttl = tonumber(ARGV[4])
  for i = 5, #ARGV do
    redis.call('ZADD', open, 'XX', string.format('%.17g', now + ttl), ARGV[i])
  end
  return reply({'ok'}, scopes)

elseif op == 'read' then
  return reply({'ok'}, scopes)
end
return redis.error_reply('unknown budgets op ' .. tostring(op))
