package generations

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// IsNoGroup reports the error Redis gives for a consumer group that does not exist
// (a script that meets it passes it through with the same prefix): a generation's
// group that a switch destroyed, or one not created yet.
func IsNoGroup(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOGROUP")
}

// IsNoStream reports the errors Redis gives for a stream that does not exist yet:
// XINFO's "no such key" (also from inside a script), XGROUP's "requires the key to
// exist", and a nil reply.
func IsNoStream(err error) bool {
	return err != nil && (errors.Is(err, redis.Nil) || strings.Contains(err.Error(), "no such key") ||
		strings.Contains(err.Error(), "requires the key to exist"))
}
