-- The multi-tier limiter of one provider key, in one script (see aoe/coordination/limiter.py).
-- Every operation reads the server's TIME (or a test's clock) and runs to completion
-- before any other client's command: all tiers are taken, or none.
--
-- KEYS[1] key state (hash)    KEYS[2] key entries (hash "tier|id" -> "amount:holdgen")
-- KEYS[3] permits (zset id -> expiry)    KEYS[4] refused grants (set)
-- KEYS[5] lane state (hash)   KEYS[6] lane entries (hash)
-- KEYS[7 .. 6+N] the N configured tiers' logs (zset id -> granted at)
-- KEYS[7+N], KEYS[8+N] the lane's learned request and token tiers' logs
-- ARGV[1] op  ARGV[2] now ('' = the server's TIME)  ARGV[3] wake channel
-- ARGV[4] N, then N x (name, limit, period_s, counts_tokens 0/1)
-- then configured concurrency ('' = none), learned period_s, then the op's own arguments.

local EPS = 1e-6
local ORIGIN = 1700000000 -- seconds subtracted from TIME so a double keeps microseconds
local RECOVERY_CALLS = 100
local DECREASE = 0.5
local NEG_INF = -math.huge

local function num(s) return tonumber(s) end
local function fmt(x) return string.format('%.17g', x) end

local op = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = (tonumber(t[1]) - ORIGIN) + tonumber(t[2]) / 1e6
end
local channel = ARGV[3]
local n = tonumber(ARGV[4])
local a = 5
local tiers = {}
for i = 1, n do
  tiers[#tiers + 1] = {f = ARGV[a], name = ARGV[a], limit = tonumber(ARGV[a + 1]),
    period = tonumber(ARGV[a + 2]), tok = ARGV[a + 3] == '1', st = KEYS[1], amt = KEYS[2],
    log = KEYS[6 + i]}
  a = a + 4
end
local configured = num(ARGV[a])
local learned_period = tonumber(ARGV[a + 1])
a = a + 2
local lane_st, lane_amt = KEYS[5], KEYS[6]
for k, spec in ipairs({{'rl', 'requests_per_minute (learned)', false},
                       {'tl', 'tokens_per_minute (learned)', true}}) do
  local limit = num(redis.call('HGET', lane_st, spec[1] .. ':limit'))
  if limit then
    tiers[#tiers + 1] = {f = spec[1], name = spec[2], limit = limit, period = learned_period,
      tok = spec[3], st = lane_st, amt = lane_amt, log = KEYS[6 + n + k], learned = true}
  end
end
local st, permits, refused = KEYS[1], KEYS[3], KEYS[4]

local function hget(h, f) return num(redis.call('HGET', h, f)) end

-- tier state: used, hold until (hu), hold left (hl), hold generation (hg)
local function refresh(t)
  local cutoff = now - t.period + EPS
  local gone = redis.call('ZRANGEBYSCORE', t.log, '-inf', fmt(cutoff))
  if #gone > 0 then
    local freed = 0
    for _, id in ipairs(gone) do
      local field = t.f .. '|' .. id
      local v = redis.call('HGET', t.amt, field)
      if v then
        freed = freed + tonumber(string.match(v, '^(-?%d+)'))
        redis.call('HDEL', t.amt, field)
      end
    end
    redis.call('ZREMRANGEBYSCORE', t.log, '-inf', fmt(cutoff))
    redis.call('HINCRBY', t.st, t.f .. ':used', -freed)
  end
  t.used = hget(t.st, t.f .. ':used') or 0
  t.hu = hget(t.st, t.f .. ':hu') or NEG_INF
  if t.hu <= now + EPS then t.hu = NEG_INF end
  t.hl = hget(t.st, t.f .. ':hl') or 0
  t.hg = hget(t.st, t.f .. ':hg') or 0
end

local function room(t)
  local r = t.limit - t.used
  if t.hu ~= NEG_INF and t.hl < r then return t.hl end
  return r
end

local function need(t, tokens) if t.tok then return tokens end return 1 end

local function ready_at(t, amount)
  local at = NEG_INF
  if t.hu ~= NEG_INF and amount > t.hl then at = t.hu end
  local excess = t.used + amount - t.limit
  if excess <= 0 then return at end
  local log = redis.call('ZRANGE', t.log, 0, -1, 'WITHSCORES')
  local freed = 0
  for i = 1, #log, 2 do
    local v = redis.call('HGET', t.amt, t.f .. '|' .. log[i])
    if v then freed = freed + tonumber(string.match(v, '^(-?%d+)')) end
    if freed >= excess then return math.max(at, tonumber(log[i + 1]) + t.period) end
  end
  return math.huge
end

local function in_flight()
  redis.call('ZREMRANGEBYSCORE', permits, '-inf', fmt(now)) -- a stopped process's permits
  return redis.call('ZCARD', permits)
end

local function cap()
  local learned = hget(st, 'learned')
  if learned == nil then return configured end
  if configured == nil then return learned end
  return math.min(learned, configured)
end

local function take(t, id, amount)
  redis.call('ZADD', t.log, fmt(now), id)
  local gen = 0
  if t.hu ~= NEG_INF then
    gen = t.hg
    t.hl = t.hl - amount
    redis.call('HSET', t.st, t.f .. ':hl', t.hl)
  end
  redis.call('HSET', t.amt, t.f .. '|' .. id, amount .. ':' .. gen)
  t.used = t.used + amount
  redis.call('HINCRBY', t.st, t.f .. ':used', amount)
end

local function pause(seconds, close_over)
  if seconds > close_over then
    local until_ = math.max(hget(st, 'closed_until') or NEG_INF, now + seconds)
    redis.call('HSET', st, 'closed_until', fmt(until_))
    redis.call('PUBLISH', channel, 'closed')
  else
    local until_ = math.max(hget(st, 'paused_until') or NEG_INF, now + math.max(0, seconds))
    redis.call('HSET', st, 'paused_until', fmt(until_))
  end
end

-- The readout every call returns, so a process's live view follows every other process:
-- in flight, learned concurrency, paused for, closed for, 429s, then name/used/limit/period.
local function status()
  local out = {tostring(in_flight()), tostring(hget(st, 'learned') or ''),
    fmt(math.max(0, (hget(st, 'paused_until') or NEG_INF) - now)),
    fmt(math.max(0, (hget(st, 'closed_until') or NEG_INF) - now)),
    tostring(hget(st, 'rate_limited') or 0)}
  for _, t in ipairs(tiers) do
    refresh(t)
    out[#out + 1] = t.name
    out[#out + 1] = tostring(t.limit - room(t))
    out[#out + 1] = tostring(t.limit)
    out[#out + 1] = fmt(t.period)
  end
  return out
end

local function reply(head)
  local s = status()
  for _, v in ipairs(s) do head[#head + 1] = v end
  return head
end

if op == 'acquire' then
  -- ARGV: tokens, permit ttl -> {'granted', id, now} | {'wait', why, seconds (-1: a freed
  -- slot)} | {'closed', seconds} | {'never', tier, limit, amount}
  local tokens, ttl = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local closed = hget(st, 'closed_until') or NEG_INF
  if closed > now + EPS then return reply({'closed', fmt(closed - now), ''}) end
  for _, t in ipairs(tiers) do
    if t.learned and need(t, tokens) > t.limit then
      return reply({'never', t.name, tostring(t.limit), tostring(need(t, tokens))})
    end
  end
  local c = cap()
  local flying = in_flight()
  if c ~= nil and flying >= c then
    local first = redis.call('ZRANGE', permits, 0, 0, 'WITHSCORES')
    local wait = -1
    if first[2] then wait = tonumber(first[2]) - now end -- when a stopped process's permit ends
    return reply({'wait', 'concurrent_requests', fmt(wait)})
  end
  local at = hget(st, 'paused_until') or NEG_INF
  local why = 'paused'
  local ok = at <= now + EPS
  for _, t in ipairs(tiers) do
    refresh(t)
    if need(t, tokens) > room(t) then
      ok = false
      local r = ready_at(t, need(t, tokens))
      if r > at then at, why = r, t.name end
    end
  end
  if not ok then return reply({'wait', why, fmt(math.max(0, at - now))}) end
  local id = redis.call('HINCRBY', st, 'last_id', 1)
  for _, t in ipairs(tiers) do take(t, id, need(t, tokens)) end
  redis.call('ZADD', permits, fmt(now + ttl), id)
  return reply({'granted', tostring(id), fmt(now)})

elseif op == 'settle' then
  -- ARGV: id, reserved tokens, actual tokens
  local id, reserved, actual = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if redis.call('SREM', refused, id) == 0 then -- a call without a 429 may vouch
    local learned = hget(st, 'learned')
    local flying = in_flight()
    if learned and tonumber(id) > (hget(st, 'fell_after') or 0) and flying >= learned then
      local vouched = redis.call('HINCRBY', st, 'vouched', 1)
      if vouched >= RECOVERY_CALLS then
        redis.call('HSET', st, 'vouched', 0)
        learned = learned + 1
        if configured ~= nil and learned >= configured then
          redis.call('HDEL', st, 'learned')
        else
          redis.call('HSET', st, 'learned', learned)
        end
      end
    end
  end
  redis.call('ZREM', permits, id)
  local delta = actual - reserved
  if delta ~= 0 then
    for _, t in ipairs(tiers) do
      if t.tok then
        refresh(t)
        if delta > 0 and t.hu ~= NEG_INF then
          redis.call('HINCRBY', t.st, t.f .. ':hl', -delta)
        end
        local field = t.f .. '|' .. id
        local v = redis.call('HGET', t.amt, field)
        if v then
          local amount, gen = string.match(v, '^(-?%d+):(%d+)$')
          redis.call('HSET', t.amt, field, (tonumber(amount) + delta) .. ':' .. gen)
          redis.call('HINCRBY', t.st, t.f .. ':used', delta)
        elseif delta > 0 then -- its grant left the window: the extra is charged now
          t.hu = NEG_INF
          take(t, id .. '+', delta)
        end
      end
    end
  end
  redis.call('PUBLISH', channel, 'free')
  return reply({'ok'})

elseif op == 'release' then
  -- ARGV: id
  local id = ARGV[a]
  redis.call('SREM', refused, id)
  redis.call('ZREM', permits, id)
  for _, t in ipairs(tiers) do
    refresh(t)
    local field = t.f .. '|' .. id
    local v = redis.call('HGET', t.amt, field)
    if v then
      local amount, gen = string.match(v, '^(-?%d+):(%d+)$')
      amount = tonumber(amount)
      if t.hu ~= NEG_INF and tonumber(gen) == t.hg and tonumber(gen) > 0 then
        redis.call('HINCRBY', t.st, t.f .. ':hl', amount) -- the provider never counted it
      end
      redis.call('HINCRBY', t.st, t.f .. ':used', -amount)
      redis.call('HDEL', t.amt, field)
      redis.call('ZREM', t.log, id)
    end
  end
  redis.call('PUBLISH', channel, 'free')
  return reply({'ok'})

elseif op == 'observe' then
  -- ARGV: per kind (requests, then tokens): limit, remaining, reset_s ('' = not said)
  for k = 0, 1 do
    local tok = k == 1
    local limit, remaining, reset = num(ARGV[a + 3 * k]), num(ARGV[a + 3 * k + 1]),
      num(ARGV[a + 3 * k + 2])
    local tier = nil
    if limit == nil then
      for _, t in ipairs(tiers) do
        if t.tok == tok then tier = t; break end
      end
    else
      for _, t in ipairs(tiers) do
        if t.tok == tok and t.limit == limit and not t.learned then tier = t; break end
      end
      if tier == nil and limit > 0 then
        local f = 'rl'
        local name = 'requests_per_minute (learned)'
        local log = KEYS[7 + n]
        if tok then f, name, log = 'tl', 'tokens_per_minute (learned)', KEYS[8 + n] end
        redis.call('HSET', lane_st, f .. ':limit', limit)
        for _, t in ipairs(tiers) do
          if t.f == f then tier = t; t.limit = limit end
        end
        if tier == nil then
          tier = {f = f, name = name, limit = limit, period = learned_period, tok = tok,
            st = lane_st, amt = lane_amt, log = log, learned = true}
          tiers[#tiers + 1] = tier
        end
      end
    end
    if tier ~= nil and remaining ~= nil and reset ~= nil then
      refresh(tier)
      local hold = math.min(math.max(0, reset), tier.period)
      if hold > EPS then
        redis.call('HINCRBY', tier.st, tier.f .. ':hg', 1)
        redis.call('HSET', tier.st, tier.f .. ':hu', fmt(now + hold),
          tier.f .. ':hl', math.max(0, remaining))
      else
        redis.call('HDEL', tier.st, tier.f .. ':hu')
      end
    end
  end
  redis.call('PUBLISH', channel, 'free')
  return reply({'ok'})

elseif op == 'pause' then
  -- ARGV: seconds, close over
  pause(tonumber(ARGV[a]), tonumber(ARGV[a + 1]))
  return reply({'ok'})

elseif op == 'note429' then
  -- ARGV: id, kind, retry_after_s ('' = none), close over, explained elsewhere (0/1)
  local id, kind, retry = ARGV[a], ARGV[a + 1], num(ARGV[a + 2])
  local close_over, lane_full = tonumber(ARGV[a + 3]), ARGV[a + 4] == '1'
  redis.call('HINCRBY', st, 'rate_limited', 1)
  if redis.call('ZSCORE', permits, id) then redis.call('SADD', refused, id) end
  local explained = lane_full
  for _, t in ipairs(tiers) do
    refresh(t)
    if room(t) < 1 then explained = true end
  end
  if kind == 'concurrency' or (kind == 'rate_limit' and not explained) then
    local flying = math.max(1, in_flight())
    local learned = hget(st, 'learned')
    if tonumber(id) <= (hget(st, 'fell_after') or 0) then
      if learned ~= nil and 1 <= flying - 1 and flying - 1 < learned then
        redis.call('HSET', st, 'learned', flying - 1)
      end
    else
      local c = cap()
      local base = flying
      if c ~= nil then base = math.min(c, flying) end
      redis.call('HSET', st, 'learned', math.max(1, math.floor(base * DECREASE)),
        'fell_after', hget(st, 'last_id') or 0, 'vouched', 0)
    end
  end
  if retry ~= nil and kind ~= 'quota' then pause(retry, close_over) end
  return reply({'ok'})

elseif op == 'renew' then
  -- ARGV: ttl, ids... (the permits this process still holds)
  local ttl = tonumber(ARGV[a])
  for i = a + 1, #ARGV do
    redis.call('ZADD', permits, 'XX', fmt(now + ttl), ARGV[i])
  end
  return reply({'ok'})

elseif op == 'stats' then
  return reply({'ok'})
end
return redis.error_reply('unknown limiter op ' .. tostring(op))
