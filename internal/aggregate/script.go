package aggregate

import (
	_ "embed"
	"strings"

	"github.com/redis/go-redis/v9"
)

//go:embed increments.lua
var incrementsSource string

// NewScript returns the script body with the increments block (increments.lua, which
// defines apply_increments) put in after its first line, so that every script that
// writes counts reads the increments with the same code. The first line must be the
// `#!lua` shebang, and stays first: with it, Redis refuses a script whose keys are not
// all in one slot, so the scripts stay ready for Redis Cluster. NewScript panics if
// body does not start with it (a programming error, found when the program starts).
func NewScript(body string) *redis.Script {
	shebang, rest, ok := strings.Cut(body, "\n")
	if !ok || !strings.HasPrefix(shebang, "#!lua") {
		panic("aggregate.NewScript: the script must start with a #!lua line")
	}
	return redis.NewScript(shebang + "\n" + incrementsSource + rest)
}
