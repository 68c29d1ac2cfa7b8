"""The Lua scripts of :class:`~router.shared.redis.RedisState`.

Each is atomic in Redis and follows the method of
:class:`~router.shared.local.LocalStore` of the same name (the reference). Amounts
travel as decimal strings and come back as strings (Lua would truncate numbers to
integers in replies).

Keys (``{ns}`` is a hash tag, so one deployment's keys share a cluster slot):

* ``{ns}:d:<day>:spent`` / ``:resv`` — hashes of USD per field (``*``, ``m:<model>``,
  ``p:<provider>``, ``t:<task type>``): booked, and held by calls in flight;
* ``{ns}:d:<day>:holds`` — hash hold id -> ``r<TAB>amount<TAB>fields...`` while
  reserved, ``s`` once settled (so a repeated settle books nothing), ``x`` released
  or expired;
* ``{ns}:d:<day>:leases`` — sorted set hold id -> lease expiry (driver clock);
* every day key expires two days after its day began (so a late settle still finds
  yesterday's hold);
* ``{ns}:b:<model>`` — hash ``state`` (closed/open), ``until``, ``epoch``, ``consec``;
  ``{ns}:b:<model>:probe`` — the half-open probe token (holder, with a TTL);
* channel ``{ns}:breaker`` — ``model<TAB>state<TAB>until<TAB>epoch<TAB>origin`` on
  every transition.
"""

from __future__ import annotations

_UNRESERVE = """
local function unreserve(resv, rec)
  local parts = {}
  for part in string.gmatch(rec, "[^\\t]+") do parts[#parts + 1] = part end
  local neg = '-' .. parts[2]
  for i = 3, #parts do
    local v = tonumber(redis.call('HINCRBYFLOAT', resv, parts[i], neg))
    if v < 1e-9 then redis.call('HSET', resv, parts[i], '0') end
  end
end
"""

#: KEYS spent, resv, holds, leases; ARGV hold, amount, now, lease_until, ttl_s, n,
#: then n pairs (field, cap; cap < 0: none). Returns {admitted, field, level}.
RESERVE = (
    _UNRESERVE
    + """
local hold = ARGV[1]
local amount = tonumber(ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[3], 'LIMIT', 0, 512)
for _, id in ipairs(dead) do
  local rec = redis.call('HGET', KEYS[3], id)
  if rec and string.sub(rec, 1, 1) == 'r' then
    unreserve(KEYS[2], rec)
    redis.call('HSET', KEYS[3], id, 'x')
  end
  redis.call('ZREM', KEYS[4], id)
end
local prior = redis.call('HGET', KEYS[3], hold)
if prior then
  if string.sub(prior, 1, 1) == 'r' then return {1, '*', '0'} end
  return {0, '*', '0'}
end
local n = tonumber(ARGV[6])
local fields = {}
for i = 0, n - 1 do
  local f = ARGV[7 + 2 * i]
  local cap = tonumber(ARGV[8 + 2 * i])
  fields[#fields + 1] = f
  if cap >= 0 then
    local level = tonumber(redis.call('HGET', KEYS[1], f) or '0')
      + tonumber(redis.call('HGET', KEYS[2], f) or '0')
    if level + amount > cap + 1e-9 then return {0, f, tostring(level)} end
  end
end
for _, f in ipairs(fields) do redis.call('HINCRBYFLOAT', KEYS[2], f, ARGV[2]) end
redis.call('HSET', KEYS[3], hold, 'r\\t' .. ARGV[2] .. '\\t' .. table.concat(fields, '\\t'))
redis.call('ZADD', KEYS[4], ARGV[4], hold)
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
local level = tonumber(redis.call('HGET', KEYS[1], '*') or '0')
  + tonumber(redis.call('HGET', KEYS[2], '*') or '0')
return {1, '*', tostring(level)}
"""
)

#: KEYS book spent, hold-day resv, holds, leases; ARGV hold, actual, ttl_book,
#: ttl_hold, fields... Returns 1 when it booked, 0 for a repeated settle.
SETTLE = (
    _UNRESERVE
    + """
local rec = redis.call('HGET', KEYS[3], ARGV[1])
if rec == 's' then return 0 end
if rec and string.sub(rec, 1, 1) == 'r' then
  unreserve(KEYS[2], rec)
  redis.call('ZREM', KEYS[4], ARGV[1])
end
if tonumber(ARGV[2]) ~= 0 then
  for i = 5, #ARGV do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[2]) end
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('HSET', KEYS[3], ARGV[1], 's')
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""
)

#: KEYS resv, holds, leases; ARGV hold. Ends a reserved hold without booking.
RELEASE = (
    _UNRESERVE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if rec and string.sub(rec, 1, 1) == 'r' then
  unreserve(KEYS[1], rec)
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], 'x')
end
return 1
"""
)

#: KEYS leases; ARGV lease_until, holds... Extends the leases still held (XX).
RENEW = """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i]) end
return 1
"""

#: KEYS breaker; ARGV threshold, ttl_s. Returns 1 when the shared consecutive count
#: reached the threshold (the reporting replica trips).
B_FAIL = """
if redis.call('HGET', KEYS[1], 'state') == 'open' then return 0 end
local c = redis.call('HINCRBY', KEYS[1], 'consec', 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
if c >= tonumber(ARGV[1]) then return 1 end
return 0
"""

#: KEYS breaker. A success while closed resets the shared consecutive count.
B_SUCCESS = """
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'open' and redis.call('HEXISTS', KEYS[1], 'consec') == 1 then
  redis.call('HSET', KEYS[1], 'consec', 0)
end
return 1
"""

_PUBLISH = """
local function publish(channel, model, state, untilv, epoch, origin)
  local sep = '\\t'
  local text = model .. sep .. state .. sep .. untilv .. sep .. epoch .. sep .. origin
  redis.call('PUBLISH', channel, text)
end
"""

#: KEYS breaker, probe; ARGV until, model, origin, channel, ttl_s. The later of two
#: open deadlines wins. Returns {state, until, epoch}.
B_OPEN = (
    _PUBLISH
    + """
local st = redis.call('HGET', KEYS[1], 'state')
local cur = redis.call('HGET', KEYS[1], 'until') or '0'
local ep = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if st == 'open' and tonumber(cur) >= tonumber(ARGV[1]) then return {st, cur, ep} end
ep = ep + 1
redis.call('HSET', KEYS[1], 'state', 'open', 'until', ARGV[1], 'epoch', ep, 'consec', 0)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('DEL', KEYS[2])
publish(ARGV[4], ARGV[2], 'open', ARGV[1], ep, ARGV[3])
return {'open', ARGV[1], ep}
"""
)

#: KEYS breaker, probe; ARGV now, model, origin, channel, ttl_s. A probe succeeded:
#: close unless an opening is not yet due. Returns {state, until, epoch}.
B_CLOSE = (
    _PUBLISH
    + """
local st = redis.call('HGET', KEYS[1], 'state')
local cur = redis.call('HGET', KEYS[1], 'until') or '0'
local ep = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if st ~= 'open' or tonumber(cur) > tonumber(ARGV[1]) then return {st or 'closed', cur, ep} end
ep = ep + 1
redis.call('HSET', KEYS[1], 'state', 'closed', 'until', '0', 'epoch', ep, 'consec', 0)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('DEL', KEYS[2])
publish(ARGV[4], ARGV[2], 'closed', '0', ep, ARGV[3])
return {'closed', '0', ep}
"""
)

#: KEYS breaker, probe; ARGV now, replica, ttl_ms. Returns {code, until}: 1 the
#: probe token is ours, 0 refused (open and not due, or held by another replica),
#: 2 the breaker is closed.
B_PROBE = """
local st = redis.call('HGET', KEYS[1], 'state')
local cur = redis.call('HGET', KEYS[1], 'until') or '0'
if st == 'open' and tonumber(cur) > tonumber(ARGV[1]) then return {0, cur} end
if st ~= 'open' then return {2, '0'} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1, cur} end
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {1, cur}
end
return {0, '0'}
"""

#: KEYS probe; ARGV replica. Gives the probe token back if it is ours.
B_PROBE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
