-- apply_increments(i) runs the increments that aggregate.Increments encoded in
-- ARGV[i..#ARGV] (see the package comment of internal/aggregate for the encoding).
-- aggregate.NewScript puts this block at the start of every script that writes counts,
-- so that the live apply and the retention fold read one encoding the same way.
--
-- A section is: operation, number of groups, groups; a group is: key index, number
-- of items, items. HINCRBY and ZINCRBY take their items in pairs, one call per pair;
-- the other operations take all of a group's items in one call (in chunks, since
-- unpack() is bounded by Lua's C stack): PFADD its elements, ZADDGT (ZADD … GT) its
-- (score, member) pairs, ZREMRANGEBYSCORE its min and max, PEXPIREAT its time.
local pairwise = {HINCRBY = true, ZINCRBY = true}
-- The command of each operation that takes a group's items in one call, and how many
-- arguments make one item.
local whole = {PFADD = {'PFADD'}, ZADDGT = {'ZADD', 'GT'}, ZREMRANGEBYSCORE = {'ZREMRANGEBYSCORE'},
  PEXPIREAT = {'PEXPIREAT'}}
local width = {PFADD = 1, ZADDGT = 2, ZREMRANGEBYSCORE = 2, PEXPIREAT = 1}
local CHUNK = 1000 -- items per call; even, so that pairs are never split

local function apply_increments(i)
  local n = #ARGV
  while i <= n do
    local op, groups = ARGV[i], tonumber(ARGV[i + 1])
    i = i + 2
    if pairwise[op] then
      for _ = 1, groups do
        local key, m = KEYS[tonumber(ARGV[i])], tonumber(ARGV[i + 1])
        i = i + 2
        for _ = 1, m do
          redis.call(op, key, ARGV[i], ARGV[i + 1])
          i = i + 2
        end
      end
    elseif whole[op] then
      local cmd = whole[op]
      for _ = 1, groups do
        local key, m = KEYS[tonumber(ARGV[i])], tonumber(ARGV[i + 1])
        i = i + 2
        local last = i + m * width[op] - 1
        for c = i, last, CHUNK do
          if #cmd == 1 then
            redis.call(cmd[1], key, unpack(ARGV, c, math.min(c + CHUNK - 1, last)))
          else
            redis.call(cmd[1], key, cmd[2], unpack(ARGV, c, math.min(c + CHUNK - 1, last)))
          end
        end
        i = last + 1
      end
    else
      error('apply_increments: unknown operation ' .. tostring(op) .. ' at ARGV[' .. (i - 2) .. ']')
    end
  end
end
