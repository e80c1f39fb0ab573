package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
)

// ServeDebug serves Go's profiler (/debug/pprof/) on addr (DEBUG_ADDR) until ctx is
// cancelled, and returns once it has stopped; with addr empty it returns at once. It
// is a separate listener so that it can stay on loopback while the service listens
// publicly. A profiler that cannot listen is logged, not fatal: the service runs on
// without it.
func ServeDebug(ctx context.Context, addr string, logger *slog.Logger) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		logger.Warn("profiler not started", "addr", addr, "err", err)
		return
	}
	srv := &http.Server{Handler: mux, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	logger.Info("profiler listening", "addr", ln.Addr().String())
	err = serve(ctx, srv, ln, func() error {
		// A profile or trace in flight is cut short: it is of a process that is stopping.
		return srv.Close()
	})
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("profiler stopped", "addr", addr, "err", err)
		return
	}
	logger.Info("profiler stopped")
}
