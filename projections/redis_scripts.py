"""The Lua scripts of :class:`projections.redis_cache.RedisCache` (its docstring lays out
the keys they keep)."""

INIT_SEQ = """
local function seq(p, proj)
  redis.call('SADD', p .. 'names', proj)
  local key, birth = p .. 's:' .. proj, p .. 'b:' .. proj
  local s = redis.call('GET', key)
  if s then
    if redis.call('EXISTS', birth) == 0 then redis.call('SET', birth, s) end
    return s
  end
  local t = redis.call('TIME')
  s = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('SET', key, s)
  redis.call('SET', birth, s)
  return s
end
"""

# ARGV: prefix, projection, key, lock lease ms (0: no lock)
# -> {1, entry} | {0, snapshot, locked}
BEGIN = (
    INIT_SEQ
    + """
local p = ARGV[1]
local v = redis.call('GET', p .. 'e:' .. ARGV[2] .. ':' .. ARGV[3])
if v then return {1, v} end
local s = seq(p, ARGV[2])
local locked = 0
if tonumber(ARGV[4]) > 0 and redis.call(
    'SET', p .. 'l:' .. ARGV[2] .. ':' .. ARGV[3], '1', 'NX', 'PX', ARGV[4]) then
  locked = 1
end
return {0, s, locked}
"""
)

# ARGV: prefix, projection, key, snapshot, ttl ms, JSON, unlock (1|0), tags...
# -> 1 stored | 0 refused (something it depends on was invalidated since the snapshot)
STORE = """
local p, proj, key = ARGV[1], ARGV[2], ARGV[3]
local since = tonumber(ARGV[4])
local fresh = true
local now_seq = redis.call('GET', p .. 's:' .. proj)
local born = redis.call('GET', p .. 'b:' .. proj)
if not now_seq or not born or tonumber(now_seq) < since or since < tonumber(born) then
  fresh = false  -- a snapshot of a Redis that has lost its data since
elseif tonumber(now_seq) ~= since then
  local w = redis.call('GET', p .. 'w:' .. proj)
  if w and tonumber(w) > since then fresh = false end
  for i = 8, #ARGV do
    if not fresh then break end
    local v = redis.call('GET', p .. 'v:' .. proj .. ':' .. ARGV[i])
    if v and tonumber(v) > since then fresh = false end
  end
end
if ARGV[7] == '1' then redis.call('DEL', p .. 'l:' .. proj .. ':' .. key) end
if not fresh then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[5])
local expires = now + ttl
redis.call('SET', p .. 'e:' .. proj .. ':' .. key,
  string.format('%d', expires) .. '|' .. ARGV[6], 'PX', ttl)
local function track(set)
  redis.call('ZADD', set, expires, key)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  if redis.call('PTTL', set) < ttl then redis.call('PEXPIRE', set, ttl) end
end
for i = 8, #ARGV do track(p .. 't:' .. proj .. ':' .. ARGV[i]) end
track(p .. 'a:' .. proj)
return 1
"""

DELETE_MEMBERS = """
local function delete_members(set, p, proj)
  local keys = redis.call('ZRANGE', set, 0, -1)
  local batch, deleted = {}, 0
  for j = 1, #keys do
    batch[#batch + 1] = p .. 'e:' .. proj .. ':' .. keys[j]
    if #batch == 1000 then
      deleted = deleted + redis.call('DEL', unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then deleted = deleted + redis.call('DEL', unpack(batch)) end
  redis.call('DEL', set)
  return deleted
end
"""

# ARGV: prefix, projection, version ttl ms, max entries, tags...
# -> {entries deleted, sets still to empty (by WIPE_CHUNK)}
# Tags whose entries fit in the budget are emptied here; a larger one is set aside for
# WIPE_CHUNK, so the script stays short however many entries a tag has.
INVALIDATE = (
    INIT_SEQ
    + DELETE_MEMBERS
    + """
local p, proj = ARGV[1], ARGV[2]
seq(p, proj)
local s = redis.call('INCR', p .. 's:' .. proj)
local budget = tonumber(ARGV[4])
local pending = p .. 'd:' .. proj
local deleted = 0
for i = 5, #ARGV do
  redis.call('SET', p .. 'v:' .. proj .. ':' .. ARGV[i], s, 'PX', ARGV[3])
  local set = p .. 't:' .. proj .. ':' .. ARGV[i]
  local n = redis.call('ZCARD', set)
  if n <= budget then
    if n > 0 then deleted = deleted + delete_members(set, p, proj) end
    budget = budget - n
  else
    local doomed = p .. 'x:' .. proj .. ':' .. string.format('%d', s) .. ':' .. (i - 4)
    redis.call('RENAME', set, doomed)
    redis.call('SADD', pending, doomed)
  end
end
return {deleted, redis.call('SCARD', pending)}
"""
)

# ARGV: prefix, projection, version ttl ms -> the new counter value
# Refuses every load that began before it (``w``) and sets the projection's entries aside
# for WIPE_CHUNK; O(1), whatever the number of entries.
WIPE = (
    INIT_SEQ
    + """
local p, proj = ARGV[1], ARGV[2]
seq(p, proj)
local s = redis.call('INCR', p .. 's:' .. proj)
redis.call('SET', p .. 'w:' .. proj, s, 'PX', ARGV[3])
local all = p .. 'a:' .. proj
if redis.call('EXISTS', all) == 1 then
  local doomed = p .. 'x:' .. proj .. ':' .. string.format('%d', s)  -- not 1.79e+15
  redis.call('RENAME', all, doomed)
  redis.call('SADD', p .. 'd:' .. proj, doomed)
end
return s
"""
)

# ARGV: prefix, projection, max entries -> {entries deleted, sets still to empty}
WIPE_CHUNK = """
local p, proj = ARGV[1], ARGV[2]
local budget = tonumber(ARGV[3])
local pending = p .. 'd:' .. proj
local sets = redis.call('SMEMBERS', pending)
local deleted = 0
for i = 1, #sets do
  if budget <= 0 then break end
  local set = sets[i]
  local keys = redis.call('ZRANGE', set, 0, budget - 1)
  local batch = {}
  for j = 1, #keys do
    batch[#batch + 1] = p .. 'e:' .. proj .. ':' .. keys[j]
    if #batch == 1000 then
      deleted = deleted + redis.call('UNLINK', unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then deleted = deleted + redis.call('UNLINK', unpack(batch)) end
  if #keys > 0 then redis.call('ZREMRANGEBYRANK', set, 0, #keys - 1) end
  budget = budget - #keys
  if redis.call('EXISTS', set) == 0 then redis.call('SREM', pending, set) end
end
return {deleted, redis.call('SCARD', pending)}
"""

# ARGV: prefix, the Redis server's run id, version ttl ms -> {0} | {1, {projections}}
# A Redis restarted from its RDB or AOF file (after a crash) holds entries as the file does,
# those invalidated after it was written too. Each new connection runs this first: unless
# the server process (run id) was claimed already, it refuses every load begun before and
# sets every projection's entries aside (as WIPE); the connection then empties them with
# WIPE_CHUNK and sets ``run``, before it serves a read. Every connection to the new server
# waits so (or helps), so no read finds an entry the file brought back.
CLAIM = (
    INIT_SEQ
    + """
local p, run = ARGV[1], ARGV[2]
if redis.call('GET', p .. 'run') == run then return {0} end
local names = redis.call('SMEMBERS', p .. 'names')
for i = 1, #names do
  local proj = names[i]
  seq(p, proj)
  local s = redis.call('INCR', p .. 's:' .. proj)
  redis.call('SET', p .. 'w:' .. proj, s, 'PX', ARGV[3])
  local all = p .. 'a:' .. proj
  if redis.call('EXISTS', all) == 1 then
    local doomed = p .. 'x:' .. proj .. ':' .. string.format('%d', s)
    redis.call('RENAME', all, doomed)
    redis.call('SADD', p .. 'd:' .. proj, doomed)
  end
end
return {1, names}
"""
)

# ARGV: prefix, run id -> 1: the server process's entries are gone (see CLAIM)
CLAIMED = """
redis.call('SET', ARGV[1] .. 'run', ARGV[2])
return 1
"""

# Redis 7 runs a script so flagged past ``maxmemory`` (``noeviction``); only used when the
# plain script is refused so (a Redis 6 cannot read the flag line).
ALLOW_OOM = "#!lua flags=allow-oom\n"

_STAMP_TAGS = """for i = 5, #ARGV do
  redis.call('SET', p .. 'v:' .. proj .. ':' .. ARGV[i], s, 'PX', ARGV[3])
"""
assert _STAMP_TAGS in INVALIDATE

# INVALIDATE for a Redis past its maxmemory (run with ALLOW_OOM): it stamps the whole
# projection (``w``, refusing every load of it begun before) instead of a version per tag,
# so that invalidating many tags writes one key, not one per tag, past the limit.
INVALIDATE_OOM = ALLOW_OOM + INVALIDATE.replace(
    _STAMP_TAGS,
    "redis.call('SET', p .. 'w:' .. proj, s, 'PX', ARGV[3])\nfor i = 5, #ARGV do\n",
)
