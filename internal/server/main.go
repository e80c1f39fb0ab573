package server

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/clickstream/pipeline/internal/config"
	"github.com/redis/go-redis/v9"
)

// Run is a service's run: it does all the work, until ctx is cancelled.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Main is the whole of a service's main. It sets what is one per process, which run
// must leave alone so that tests can start services in-process (go-redis's logger:
// its own lines go through slog, formatted as LOG_FORMAT says), runs run until SIGINT
// or SIGTERM, and exits 1 with run's error, prefixed with name.
func Main(name string, run Run) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// A bad LOG_FORMAT or LOG_LEVEL is run's to report; this logger falls back to text.
	redis.SetLogger(RedisLog{Logger: config.NewReader(os.Getenv).Logger(os.Stderr)})
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
