package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// echoLog carries echo's own log lines into the service's logger, so that with
// LOG_FORMAT=json nothing on stderr is anything but JSON. echo logs little once set
// up (at its default level, errors only); its lines arrive here already formatted.
type echoLog struct{ logger *slog.Logger }

func (w echoLog) Write(p []byte) (int, error) {
	w.logger.Error(strings.TrimSpace(string(p)), "source", "echo")
	return len(p), nil
}

// RedisLog adapts a logger to go-redis's logging interface, for redis.SetLogger:
// go-redis logs some failures on its own (a dial that failed after its retries, say),
// and by default prints them as plain text on stderr. go-redis has one logger per
// process, so Main sets it, not a service's run: tests run several services in one
// process, and each would send the others' go-redis lines to its own log.
type RedisLog struct{ Logger *slog.Logger }

// Printf logs one go-redis line at warn level.
func (l RedisLog) Printf(ctx context.Context, format string, v ...any) {
	l.Logger.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "source", "go-redis")
}
