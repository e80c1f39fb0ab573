package lag

import (
	"context"
	"fmt"

	"github.com/clickstream/pipeline/internal/generations"
	"github.com/redis/go-redis/v9"
)

// repairScript sets a group's entries-read counter to entries-added, in one atomic step
// with the check that makes that value right: the group has been delivered the newest
// entry ever added, so it has read every entry ever added (Redis itself sets the
// counter so when a read reaches the end with the counter unknown). XGROUP SETID …
// ENTRIESREAD goes to the AOF as it is, so the repair survives a restart; reads after
// it are lost again by the next restart, and repaired again at the next such moment.
// Returns {0} having changed nothing, or {1, the counter it replaced (-1 for nil), the
// counter it set}.
var repairScript = redis.NewScript(`#!lua
local last, added
local s = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #s, 2 do
  if s[i] == 'last-generated-id' then last = s[i + 1] end
  if s[i] == 'entries-added' then added = s[i + 1] end
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == ARGV[1] then
    if f['last-delivered-id'] ~= last or f['entries-read'] == added then return {0} end
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', added)
    return {1, f['entries-read'] or -1, added}
  end
end
return {0}
`)

// Repair sets group's entries-read counter right if the group is caught up and the
// counter says otherwise, and reports whether it did, with the counter it replaced (-1:
// unknown) and the one it set. It is cheap (two XINFO calls inside a script) and safe
// to call at any time from any process: it changes nothing unless the group has been
// delivered every entry at the moment it runs. A missing stream or group is nothing to
// repair.
func Repair(ctx context.Context, rdb redis.Scripter, stream, group string) (repaired bool, was, now int64, err error) {
	v, err := repairScript.Run(ctx, rdb, []string{stream}, group).Slice()
	if err != nil {
		if generations.IsNoStream(err) || generations.IsNoGroup(err) {
			return false, 0, 0, nil
		}
		return false, 0, 0, fmt.Errorf("repair the entries-read counter of %s: %w", group, err)
	}
	if n, _ := v[0].(int64); n != 1 || len(v) < 3 {
		return false, 0, 0, nil
	}
	was, _ = v[1].(int64)
	now, _ = v[2].(int64)
	return true, was, now, nil
}
