#!lua
-- Apply a batch of stream entries to the aggregates, exactly once in effect.
-- KEYS[1]    the stream
-- KEYS[2]    the group's claim epoch
-- KEYS[3..]  the keys the increments name (aggregate.Increments.Keys)
-- ARGV[1]    the consumer group
-- ARGV[2]    this consumer's name
-- ARGV[3]    n, the number of entry ids that follow
-- ARGV[4], ARGV[5]        the smallest and the largest of those ids
-- ARGV[6]                 the claim epoch read just before the batch was read ('' = unknown)
-- ARGV[7 .. 6+n]          the batch's entry ids
-- ARGV[7+n ..]            the increments of the batch, for apply_increments
--                         (internal/aggregate/increments.lua, put in at start-up)
--
-- Returns {n} when the batch was applied. Returns {m, id...} with m < n, applying and
-- acking nothing, when only the m listed entries are still pending for this consumer:
-- the others were applied by another consumer, or claimed by one that will apply
-- them. The caller then sums the increments of the listed entries only and calls again.
--
-- Why the ownership check and the ack come first, in the same script as the
-- increments: an entry stays pending until the apply that counts it acks it, and both
-- happen in one atomic step, by the consumer that owns the entry at that moment. So an
-- entry is counted exactly once: a redelivered or claimed copy of a counted entry is no
-- longer pending, a crash cannot separate counting from acking, and no per-event dedup
-- state is needed.
--
-- The ownership check costs a lookup per entry, so it is skipped when it cannot fail:
-- entries change owner only through a claim, every claim bumps the claim epoch, and
-- only an entry's owner acks it. If the epoch is the one read before the batch was
-- read, every entry of the batch is still pending and still ours.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
local first, last = 7, 6 + n
local CHUNK = 2000 -- unpack() is bounded by Lua's C stack

-- With the epoch unchanged, the first entry is still checked, for one lookup: a batch
-- is applied whole or not at all, so if its first entry is no longer ours the batch was
-- already applied (a caller retrying with the epoch by mistake counts nothing twice).
local checked = ARGV[6] == '' or (redis.call('GET', KEYS[2]) or '0') ~= ARGV[6]
if not checked then
  local f = redis.call('XPENDING', stream, group, ARGV[first], ARGV[first], 1, consumer)
  checked = #f == 0
end
if checked then
  -- This consumer's pending entries in the batch's id range, in one call. The range may
  -- also hold entries claimed from a dead consumer that are not in this batch, so the
  -- count grows until the reply is complete.
  local count = n + 1
  local p
  while true do
    p = redis.call('XPENDING', stream, group, ARGV[4], ARGV[5], count, consumer)
    if #p < count then break end
    count = count * 2
  end
  local mine = {}
  for _, e in ipairs(p) do mine[e[1]] = true end
  local owned = {}
  for j = first, last do
    if mine[ARGV[j]] then owned[#owned + 1] = ARGV[j] end
  end
  if #owned < n then
    table.insert(owned, 1, #owned)
    return owned
  end
end

for c = first, last, CHUNK do
  redis.call('XACK', stream, group, unpack(ARGV, c, math.min(c + CHUNK - 1, last)))
end
apply_increments(last + 1)
return {n}
