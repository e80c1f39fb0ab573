#!lua
-- Fold a batch of old entries into the checkpoint and trim them from the stream, in one
-- atomic step, so that checkpoint + stream always holds every event exactly once.
-- KEYS[1]    the stream
-- KEYS[2]    the checkpoint's info hash
-- KEYS[3..]  the checkpoint's keys the increments name (aggregate.Increments.Keys)
-- ARGV[1], ARGV[2]  the info hash's position and entries fields
-- ARGV[3]    the checkpoint position this batch follows ('' when the checkpoint is empty)
-- ARGV[4]    the id of the batch's last entry
-- ARGV[5]    the smallest id after it: XTRIM MINID removes the entries before this one
-- ARGV[6]    the number of entries in the batch
-- ARGV[7..]  the increments of the batch, for apply_increments
--            (internal/aggregate/increments.lua, put in at start-up)
--
-- Returns the number of entries trimmed, or -1 having changed nothing, when the batch
-- does not follow the checkpoint (another folder got there first: folding it again
-- would count it twice) or when some consumer group has not yet acked all of it (it
-- was delivered to no one yet, or it is pending: trimming it would lose it, since a
-- trimmed entry comes back from XREADGROUP and XCLAIM without its fields). The rebuild
-- that is building a generation is such a group, so the checkpoint never moves past
-- what a rebuild has replayed.

-- Stream ids compared exactly, as two decimal integers without leading zeros.
local function numless(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function idless(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return numless(am, bm) end
  return numless(as, bs)
end

local pos = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if pos ~= ARGV[3] then return -1 end
local last = ARGV[4]
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if idless(f['last-delivered-id'], last) then return -1 end
  if f['pending'] > 0 then
    local oldest = redis.call('XPENDING', KEYS[1], f['name'])[2]
    if not idless(last, oldest) then return -1 end
  end
end

apply_increments(7)
redis.call('HSET', KEYS[2], ARGV[1], last)
redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[6])
return redis.call('XTRIM', KEYS[1], 'MINID', ARGV[5])
