#!lua
-- Append a flush of events to the stream, atomically.
-- KEYS[1]   the stream
-- KEYS[2..] dedup markers, one per event that has an event_id
-- ARGV[1]   dedup window in seconds
-- then per event: marker (index into KEYS, 0 for none), n, and n field/value arguments
-- Returns one character per event: '1' written, '0' duplicate (marker already set).
--
-- The marker is set before the XADD and in the same script, so two copies of an event
-- can never both pass: whichever runs second finds the marker.
local stream = KEYS[1]
local window = ARGV[1]
local out = {}
local i = 2
local n = #ARGV
while i <= n do
  local marker = tonumber(ARGV[i])
  local nf = tonumber(ARGV[i + 1])
  local fresh = true
  if marker > 0 then
    fresh = redis.call('SET', KEYS[marker], '1', 'NX', 'EX', window)
  end
  if fresh then
    redis.call('XADD', stream, '*', unpack(ARGV, i + 2, i + 1 + nf))
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
  i = i + 2 + nf
end
return table.concat(out)
