// Package server is the HTTP plumbing the three services share: an echo instance with
// one error handler that maps typed errors to status codes and JSON bodies, health
// endpoints, and a graceful Run.
package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/clickstream/pipeline/internal/config"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
)

// ErrorBody is the JSON shape of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
	Index *int   `json:"index,omitempty"`
}

// Unavailable marks an error caused by Redis being unreachable, slow or refusing
// writes; the client gets 503 with Retry-After and may retry.
type Unavailable struct{ Err error }

func (u *Unavailable) Error() string { return "service unavailable: " + u.Err.Error() }
func (u *Unavailable) Unwrap() error { return u.Err }

// RetryAfterSeconds is the Retry-After sent with every 503.
const RetryAfterSeconds = 1

// New returns an echo instance with the shared error handler, panic recovery and the
// /healthz and /readyz routes. ready reports whether the service can do its job: nil,
// an error that says why not (503), or a Warning (200, with the warning).
func New(logger *slog.Logger, ready func(context.Context) error) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	// echo's own lines (few: it logs errors only) go through slog, formatted by it.
	e.Logger.SetHeader("")
	e.Logger.SetOutput(echoLog{logger})
	e.HTTPErrorHandler = errorHandler(logger)
	e.Use(recoverer(logger))
	GET(e, "/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	GET(e, "/readyz", func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		err := ready(ctx)
		var warning Warning
		switch {
		case errors.As(err, &warning):
			return c.JSON(http.StatusOK, map[string]string{"status": "ready", "warning": string(warning)})
		case err != nil:
			c.Response().Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
	return e
}

// GET routes GET and HEAD requests for path to h; every GET route of the services is
// registered through it. HTTP asks a server to answer HEAD wherever it answers GET (load
// balancers and uptime checks send it, and so does curl -I), and net/http drops what h
// writes in answer to a HEAD, so the client gets GET's status and headers without the
// body. The route keeps HEAD as its method, so metrics count HEADs as HEADs.
func GET(e *echo.Echo, path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) {
	e.Match([]string{http.MethodGet, http.MethodHead}, path, h, m...)
}

func recoverer(logger *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					if r == http.ErrAbortHandler {
						panic(r)
					}
					logger.Error("panic in handler", "path", c.Path(), "panic", r)
					err = errors.New("panic")
				}
			}()
			return next(c)
		}
	}
}

func errorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, body := classify(err)
		if status == http.StatusServiceUnavailable {
			c.Response().Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
			// A *Status 503 is a decision the service made and logs itself (ingest's
			// backpressure logs when it starts and ends, not once per refused request).
			var st *Status
			if !errors.As(err, &st) {
				logger.Warn("unavailable", "method", c.Request().Method, "path", c.Path(), "err", err)
			}
		}
		if status == http.StatusInternalServerError {
			logger.Error("internal error", "method", c.Request().Method, "path", c.Path(), "err", err)
		}
		// To a HEAD too: net/http sends the headers of the JSON answer, not its body.
		if werr := c.JSON(status, body); werr != nil {
			logger.Debug("write error response", "err", werr)
		}
	}
}

// Status is an error that carries its own status code and client-facing message.
type Status struct {
	Code  int
	Msg   string
	Index *int
}

func (s *Status) Error() string { return s.Msg }

// BadRequest is a 400 with msg.
func BadRequest(msg string) error { return &Status{Code: http.StatusBadRequest, Msg: msg} }

func classify(err error) (int, ErrorBody) {
	var st *Status
	var un *Unavailable
	var he *echo.HTTPError
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &st):
		return st.Code, ErrorBody{Error: st.Msg, Index: st.Index}
	case errors.As(err, &un), isRedisUnavailable(err):
		return http.StatusServiceUnavailable, ErrorBody{Error: "storage unavailable, retry later"}
	case errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge, ErrorBody{Error: "request body larger than " + strconv.FormatInt(maxBytes.Limit, 10) + " bytes"}
	case errors.As(err, &he):
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok && he.Code < 500 {
			msg = s
		}
		return he.Code, ErrorBody{Error: msg}
	}
	return http.StatusInternalServerError, ErrorBody{Error: "internal error"}
}

// isRedisUnavailable reports errors that mean Redis could not be reached in time or is
// refusing work for now: timeouts, refused or dropped connections, a loading or
// out-of-memory server, or one that refuses our credentials (an operator must fix
// that; to a client it is the same outage).
func isRedisUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"LOADING", "OOM", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOAUTH", "WRONGPASS"} {
			if len(msg) >= len(p) && msg[:len(p)] == p {
				return true
			}
		}
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Serve serves e on ln until ctx is cancelled (or accepting fails), then stops
// accepting connections, waits up to grace for requests in flight, closes what is left,
// and returns once its accept loop has ended. The timeouts cut off clients that send
// too slowly (a body dripped a byte at a time fails its read at t.Read, which ends the
// handler), read too slowly, or hold idle connections.
func Serve(ctx context.Context, e *echo.Echo, ln net.Listener, logger *slog.Logger, grace time.Duration, t config.HTTPTimeouts) error {
	// net/http applies ReadTimeout's deadline only once the headers are in, so the
	// headers alone get ReadHeaderTimeout: capped, HTTP_READ_TIMEOUT bounds them too.
	if t.Read > 0 && (t.ReadHeader == 0 || t.ReadHeader > t.Read) {
		t.ReadHeader = t.Read
	}
	srv := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if l, ok := ln.(*LimitListener); ok {
		srv.ConnState = l.ConnState // so that it can close idle connections to make room
	}
	logger.Info("listening", "addr", ln.Addr().String(), "read_header_timeout", t.ReadHeader,
		"read_timeout", t.Read, "write_timeout", t.Write, "idle_timeout", t.Idle)
	err := serve(ctx, srv, ln, func() error {
		logger.Info("shutting down: no new connections, finishing requests in flight")
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close() // the grace period is over: close what is still open
			return err
		}
		return nil
	})
	if err == nil {
		logger.Info("http server stopped")
	}
	return err
}

// serve runs srv on ln until ctx is cancelled or srv.Serve fails, then stops srv with
// stop (after a failure too: connections accepted before it are still open), and
// returns once srv.Serve has returned: with Serve's error if it failed, else stop's.
func serve(ctx context.Context, srv *http.Server, ln net.Listener, stop func() error) error {
	var wg sync.WaitGroup
	failed := make(chan error, 1)
	wg.Go(func() { failed <- srv.Serve(ln) })
	var err error
	select {
	case err = <-failed:
	case <-ctx.Done():
	}
	err = errors.Join(err, stop())
	wg.Wait()
	return err
}

// Listen opens addr, naming the variable it came from in the error.
func Listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, errors.New(name + "=" + addr + ": " + err.Error())
	}
	return ln, nil
}
