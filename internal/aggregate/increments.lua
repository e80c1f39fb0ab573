-- apply_increments(i) runs the increments that aggregate.Increments encoded in
-- ARGV[i..#ARGV] (see the package comment of internal/aggregate for the encoding).
-- aggregate.NewScript puts this block at the start of every script that writes counts,
-- so that the live apply and the retention fold read one encoding the same way.
--
-- A section is: operation, number of groups, groups; a group is: key index, number
-- of items, items. HINCRBY and ZINCRBY take their items in pairs, one call per pair.
local pairwise = {HINCRBY = true, ZINCRBY = true}

local function apply_increments(i)
  local n = #ARGV
  while i <= n do
    local op, groups = ARGV[i], tonumber(ARGV[i + 1])
    if not pairwise[op] then
      error('apply_increments: unknown operation ' .. tostring(op) .. ' at ARGV[' .. i .. ']')
    end
    i = i + 2
    for _ = 1, groups do
      local key, m = KEYS[tonumber(ARGV[i])], tonumber(ARGV[i + 1])
      i = i + 2
      for _ = 1, m do
        redis.call(op, key, ARGV[i], ARGV[i + 1])
        i = i + 2
      end
    end
  end
end
