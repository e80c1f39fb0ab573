#!lua
-- Apply a batch of stream entries to the aggregates, exactly once in effect.
-- KEYS[1]      the stream
-- KEYS[2]      the top-products sorted set
-- KEYS[3..]    user hashes, then product hashes (ARGV[3] = index of the first product)
-- ARGV[1]      the consumer group
-- ARGV[2]      length of the product-key prefix (the rest of a product key is its id)
-- ARGV[3]      index in KEYS of the first product hash
-- then per entry: id, user index, product index, code
--   code: 'c' click, 'v' page view, a number = dwell milliseconds, '' = ack only
--   (an entry that was dead-lettered)
-- Returns {applied, skipped}.
--
-- Why XACK comes first: XACK returns 1 only for an entry that is still pending in the
-- group. An entry that some consumer already applied was acked by that same apply, so
-- its XACK here returns 0 and its increments are skipped. That makes a redelivered,
-- claimed or retried batch harmless without keeping any per-event dedup state, and
-- because the ack and the increments happen in one script, no crash can separate them.
local stream, top, group = KEYS[1], KEYS[2], ARGV[1]
local plen = tonumber(ARGV[2])
local firstProduct = tonumber(ARGV[3])
local clicks, views, dwellMs, dwellN = {}, {}, {}, {}
local applied, skipped = 0, 0
for i = 4, #ARGV, 4 do
  if redis.call('XACK', stream, group, ARGV[i]) == 1 then
    local code = ARGV[i + 3]
    if code ~= '' then
      applied = applied + 1
      local u, p = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
      if code == 'c' then
        clicks[u] = (clicks[u] or 0) + 1
        clicks[p] = (clicks[p] or 0) + 1
      elseif code == 'v' then
        views[u] = (views[u] or 0) + 1
        views[p] = (views[p] or 0) + 1
      else
        local ms = tonumber(code)
        dwellMs[u] = (dwellMs[u] or 0) + ms
        dwellMs[p] = (dwellMs[p] or 0) + ms
        dwellN[u] = (dwellN[u] or 0) + 1
        dwellN[p] = (dwellN[p] or 0) + 1
      end
    end
  else
    skipped = skipped + 1
  end
end
for k, n in pairs(clicks) do
  redis.call('HINCRBY', KEYS[k], 'clicks', n)
  if k >= firstProduct then
    redis.call('ZINCRBY', top, n, string.sub(KEYS[k], plen + 1))
  end
end
for k, n in pairs(views) do redis.call('HINCRBY', KEYS[k], 'page_views', n) end
for k, n in pairs(dwellMs) do redis.call('HINCRBY', KEYS[k], 'dwell_ms', n) end
for k, n in pairs(dwellN) do redis.call('HINCRBY', KEYS[k], 'dwell_count', n) end
return {applied, skipped}
