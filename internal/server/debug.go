package server

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
)

// ServeDebug serves Go's profiler (/debug/pprof/) on addr when addr is not empty
// (DEBUG_ADDR). It is a separate listener so that it can stay on loopback while the
// service listens publicly.
func ServeDebug(addr string, logger *slog.Logger) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() {
		logger.Info("profiler listening", "addr", addr)
		srv := &http.Server{Addr: addr, Handler: mux, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
		if err := srv.ListenAndServe(); err != nil {
			logger.Warn("profiler stopped", "addr", addr, "err", err)
		}
	}()
}
