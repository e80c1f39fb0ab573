#!lua
-- Append one event that carries an event_id, unless that id was seen within the window.
-- KEYS[1]  the event's dedup marker
-- KEYS[2]  the stream
-- ARGV[1]  the dedup window in seconds
-- ARGV[2..] the entry's field/value pairs
-- Returns 1 when the entry was written, 0 for a duplicate.
--
-- The marker is set with NX before the XADD, in one atomic step, so two copies of an
-- event (a client retry, or two concurrent requests) can never both be written: the
-- second finds the marker.
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
  return 1
end
return 0
