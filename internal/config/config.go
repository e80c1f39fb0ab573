// Package config reads the services' settings from environment variables. Each service
// parses its variables once, in run, into a typed struct; an error names the variable.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reader reads typed variables through getenv and collects every error, so that a
// service that is misconfigured in three ways says so once, naming all three.
type Reader struct {
	getenv func(string) string
	errs   []error
}

// NewReader returns a Reader over getenv (os.Getenv in production, a map in tests).
func NewReader(getenv func(string) string) *Reader {
	return &Reader{getenv: getenv}
}

func (r *Reader) bad(name, val, want string) {
	r.errs = append(r.errs, fmt.Errorf("%s=%q: %s", name, val, want))
}

// Err returns all errors seen so far, or nil.
func (r *Reader) Err() error {
	if len(r.errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid configuration: %w", errors.Join(r.errs...))
}

// String returns the variable, or def when it is unset or empty.
func (r *Reader) String(name, def string) string {
	if v := r.getenv(name); v != "" {
		return v
	}
	return def
}

// Duration reads a Go duration ("30s", "24h") that must be at least min.
func (r *Reader) Duration(name string, def, min time.Duration) time.Duration {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.bad(name, v, "want a Go duration such as 500ms, 30s or 24h")
		return def
	}
	if d < min {
		r.bad(name, v, "must be at least "+min.String())
		return def
	}
	return d
}

// Int reads an integer in lo..hi.
func (r *Reader) Int(name string, def, lo, hi int) int {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.bad(name, v, fmt.Sprintf("want an integer from %d to %d", lo, hi))
		return def
	}
	return n
}

// Addr reads a listen address such as ":8080" or "127.0.0.1:0".
func (r *Reader) Addr(name, def string) string {
	v := r.String(name, def)
	if i := strings.LastIndexByte(v, ':'); i < 0 {
		r.bad(name, v, "want host:port, e.g. :8080")
		return def
	}
	return v
}

// DefaultRedisURL is used when REDIS_URL is unset.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// Redis reads REDIS_URL (redis://, rediss:// for TLS, or unix://) into client options.
func (r *Reader) Redis() *redis.Options {
	v := r.String("REDIS_URL", DefaultRedisURL)
	opt, err := redis.ParseURL(v)
	if err != nil {
		r.bad("REDIS_URL", MaskURL(v), "want redis://[user:password@]host:port/db, rediss://… or unix:///path/to/socket ("+err.Error()+")")
		opt, _ = redis.ParseURL(DefaultRedisURL)
	}
	// RESP2: the pipeline uses no RESP3 feature, and RESP3 makes go-redis look for push
	// notifications around every command.
	opt.Protocol = 2
	if opt.TLSConfig != nil && opt.TLSConfig.MinVersion == 0 {
		opt.TLSConfig.MinVersion = tls.VersionTLS12
	}
	return opt
}

// Namespace reads REDIS_NAMESPACE, the hash tag shared by all the pipeline's keys.
func (r *Reader) Namespace() string {
	v := r.String("REDIS_NAMESPACE", "cs")
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			r.bad("REDIS_NAMESPACE", v, "want letters, digits, '-', '_' or '.'")
			return "cs"
		}
	}
	return v
}

// Logger reads LOG_FORMAT (text or json) and LOG_LEVEL (debug, info, warn, error).
func (r *Reader) Logger(w io.Writer) *slog.Logger {
	var level slog.Level
	if v := r.getenv("LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			r.bad("LOG_LEVEL", v, "want debug, info, warn or error")
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch v := r.String("LOG_FORMAT", "text"); v {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts))
	case "text":
		return slog.New(slog.NewTextHandler(w, opts))
	default:
		r.bad("LOG_FORMAT", v, "want text or json")
		return slog.New(slog.NewTextHandler(w, opts))
	}
}

// MaskURL hides the password of a URL, for logs.
func MaskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
