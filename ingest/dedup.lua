#!lua
-- Append the events of one request, each that carries an event_id only unless that id
-- was seen within the window.
-- KEYS[1]   the stream
-- KEYS[2..] the dedup markers of the events that carry an event_id, in order
-- ARGV[1]   the dedup window in seconds
-- ARGV[2..] per event: n (the count of its field/value strings), m (1 when it has a
--           marker, 0 when not), then its n field/value strings
-- Returns how many events were duplicates (not written).
--
-- The marker is set with NX before the XADD, in one atomic step, so two copies of an
-- event (a client retry, or two concurrent requests) can never both be written: the
-- second finds the marker. One call carries the whole request, so it is written whole
-- or not at all (a script is atomic, in the AOF too), and Redis pays the cost of
-- calling a script once per request, not once per event: per event it was the larger
-- part of the cost.
local dups = 0
local k = 2
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local first = i + 2
  if ARGV[i + 1] == '1' then
    if redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[1]) then
      redis.call('XADD', KEYS[1], '*', unpack(ARGV, first, first + n - 1))
    else
      dups = dups + 1
    end
    k = k + 1
  else
    redis.call('XADD', KEYS[1], '*', unpack(ARGV, first, first + n - 1))
  end
  i = first + n
end
return dups
