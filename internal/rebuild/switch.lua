#!lua
-- Make the rebuilt generation current, in one atomic step, once it has counted every
-- entry the current generation has counted.
-- KEYS[1]  the stream
-- KEYS[2]  the generation pointer
-- KEYS[3]  the pause key
-- KEYS[4]  the rebuild state hash
-- KEYS[5]  the current generation's claim epoch
-- ARGV[1], ARGV[2]  the current generation's number and consumer group
-- ARGV[3], ARGV[4]  the new generation's number and consumer group
-- ARGV[5]  the rebuild's consumer name
-- ARGV[6], ARGV[7]  the state field and the state to record (cleanup)
-- ARGV[8], ARGV[9]  the updated-at field and the time
-- ARGV[10] how long to keep the old claim epoch, in seconds
--
-- Returns {1, old last-delivered id} having switched, or {0, reason} having changed
-- nothing: the new group still has entries pending (delivered, not yet applied), or it
-- has not yet been delivered everything the current group has. The caller applies more
-- and calls again; processors are paused meanwhile, so the current group stands still.
--
-- Why the check makes the switch exact: every entry the current generation counted
-- was delivered to its group, so it is at or before that group's last-delivered id; the
-- new group has been delivered everything up to at least that id and has applied all of
-- it (nothing pending). Entries after the new group's last-delivered id are read from
-- the new group by the processors once they see the new pointer. The old group is
-- destroyed in the same step, so a slow processor's apply of a batch read from it fails
-- with NOGROUP before it writes anything, and no entry is counted twice. (The apply
-- script skips its ownership check, which is what fails on a missing group, while the
-- claim epoch is the one read with the batch: so the epoch is set to a value no batch
-- was read with, and kept when the old generation's other keys are removed.)

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

local cur = redis.call('GET', KEYS[2]) or '1'
if cur ~= ARGV[1] then
  return redis.error_reply('the generation pointer names ' .. cur .. ', not ' .. ARGV[1])
end
local old, new
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == ARGV[2] then old = f end
  if f['name'] == ARGV[4] then new = f end
end
if not new then
  return redis.error_reply('NOGROUP the new generation has no consumer group ' .. ARGV[4])
end
if new['pending'] > 0 then return {0, 'pending'} end
if old and idless(new['last-delivered-id'], old['last-delivered-id']) then return {0, 'behind'} end

redis.call('SET', KEYS[2], ARGV[3])
local last = ''
if old then
  last = old['last-delivered-id']
  redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[5], 'replaced', 'EX', ARGV[10])
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[4], ARGV[5])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[4], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return {1, last}
