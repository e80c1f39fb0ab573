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

	"github.com/clickstream/pipeline/events"
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

// Bool reads true or false (also 1 or 0).
func (r *Reader) Bool(name string, def bool) bool {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.bad(name, v, "want true or false")
		return def
	}
	return b
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

// Redis reads REDIS_URL (redis://, rediss:// for TLS, or unix://) into the options of
// a redis.UniversalClient, the one client type every component takes: built with
// cluster.NewClient (redis.NewUniversalClient, plus what a cluster needs), these give
// a single-node client for one address, and a cluster client for go-redis's cluster
// form, redis://host:7000?addr=host:7001&addr=host:7002 (redis.ParseClusterURL): any
// addr parameter selects cluster mode, and the addresses are seeds from which the
// client learns every node.
func (r *Reader) Redis() *redis.UniversalOptions {
	v := r.String("REDIS_URL", DefaultRedisURL)
	var uopt *redis.UniversalOptions
	if IsClusterURL(v) {
		copt, err := redis.ParseClusterURL(v)
		if err != nil {
			r.bad("REDIS_URL", MaskURL(v), "want redis://[user:password@]host:port?addr=host:port&addr=… for a cluster ("+urlCause(err)+")")
			copt, _ = redis.ParseClusterURL("redis://127.0.0.1:6379?addr=127.0.0.1:6380")
		}
		uopt = universalCluster(copt)
	} else {
		opt, err := redis.ParseURL(v)
		if err != nil {
			r.bad("REDIS_URL", MaskURL(v), "want redis://[user:password@]host:port/db, rediss://… or unix:///path/to/socket ("+urlCause(err)+")")
			opt, _ = redis.ParseURL(DefaultRedisURL)
		}
		uopt = universal(opt)
	}
	// RESP2: the pipeline uses no RESP3 feature, and RESP3 makes go-redis look for push
	// notifications around every command.
	uopt.Protocol = 2
	if uopt.TLSConfig != nil && uopt.TLSConfig.MinVersion == 0 {
		uopt.TLSConfig.MinVersion = tls.VersionTLS12
	}
	return uopt
}

// IsClusterURL reports whether a REDIS_URL is in go-redis's cluster form: it has an
// addr query parameter.
func IsClusterURL(v string) bool {
	u, err := url.Parse(v)
	return err == nil && u.Query().Has("addr")
}

// urlCause is the cause of a URL parse error without the URL: net/url's errors quote
// the whole URL, password included.
func urlCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// universalCluster carries every option redis.ParseClusterURL sets over to
// UniversalOptions, with IsClusterMode set, so that even a URL that names one seed
// twice builds a cluster client.
func universalCluster(o *redis.ClusterOptions) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:                   o.Addrs,
		IsClusterMode:           true,
		ClientName:              o.ClientName,
		Protocol:                o.Protocol,
		Username:                o.Username,
		Password:                o.Password,
		MaxRedirects:            o.MaxRedirects,
		ReadOnly:                o.ReadOnly,
		RouteByLatency:          o.RouteByLatency,
		RouteByLatencyTolerance: o.RouteByLatencyTolerance,
		RouteRandomly:           o.RouteRandomly,
		MaxRetries:              o.MaxRetries,
		MinRetryBackoff:         o.MinRetryBackoff,
		MaxRetryBackoff:         o.MaxRetryBackoff,
		DialTimeout:             o.DialTimeout,
		DialerRetries:           o.DialerRetries,
		DialerRetryTimeout:      o.DialerRetryTimeout,
		ReadTimeout:             o.ReadTimeout,
		WriteTimeout:            o.WriteTimeout,
		PipelineReadBufferSize:  o.PipelineReadBufferSize,
		PipelineWriteBufferSize: o.PipelineWriteBufferSize,
		PipelinePoolSize:        o.PipelinePoolSize,
		PoolFIFO:                o.PoolFIFO,
		PoolSize:                o.PoolSize,
		MaxConcurrentDials:      o.MaxConcurrentDials,
		PoolTimeout:             o.PoolTimeout,
		MinIdleConns:            o.MinIdleConns,
		MaxIdleConns:            o.MaxIdleConns,
		MaxActiveConns:          o.MaxActiveConns,
		ConnMaxIdleTime:         o.ConnMaxIdleTime,
		ConnMaxLifetime:         o.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   o.ConnMaxLifetimeJitter,
		FailingTimeoutSeconds:   o.FailingTimeoutSeconds,
		TLSConfig:               o.TLSConfig,
	}
}

// universal carries every option redis.ParseURL sets over to UniversalOptions. The
// network is not among them: a single-node client takes an address that starts with
// '/' for a unix socket (ParseURL's unix:// addresses all do), anything else for TCP.
func universal(o *redis.Options) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:                   []string{o.Addr},
		ClientName:              o.ClientName,
		DB:                      o.DB,
		Protocol:                o.Protocol,
		Username:                o.Username,
		Password:                o.Password,
		MaxRetries:              o.MaxRetries,
		MinRetryBackoff:         o.MinRetryBackoff,
		MaxRetryBackoff:         o.MaxRetryBackoff,
		DialTimeout:             o.DialTimeout,
		ReadTimeout:             o.ReadTimeout,
		WriteTimeout:            o.WriteTimeout,
		PipelineReadBufferSize:  o.PipelineReadBufferSize,
		PipelineWriteBufferSize: o.PipelineWriteBufferSize,
		PipelinePoolSize:        o.PipelinePoolSize,
		PoolFIFO:                o.PoolFIFO,
		PoolSize:                o.PoolSize,
		MaxConcurrentDials:      o.MaxConcurrentDials,
		PoolTimeout:             o.PoolTimeout,
		MinIdleConns:            o.MinIdleConns,
		MaxIdleConns:            o.MaxIdleConns,
		MaxActiveConns:          o.MaxActiveConns,
		ConnMaxIdleTime:         o.ConnMaxIdleTime,
		ConnMaxLifetime:         o.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   o.ConnMaxLifetimeJitter,
		TLSConfig:               o.TLSConfig,
	}
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

// Partitions reads STREAM_PARTITIONS, the number of partitions of the event stream
// (see events.Layout): 1, the default, is a single stream with today's keys.
func (r *Reader) Partitions() int {
	return r.Int("STREAM_PARTITIONS", 1, 1, events.MaxPartitions)
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

// MaskURL hides the password of a URL, for logs, also in a URL that does not parse.
func MaskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Everything from the first ':' of the user info to its '@' is the password.
		_, rest, ok := strings.Cut(raw, "://")
		at := strings.LastIndexByte(rest, '@')
		if !ok || at < 0 {
			return raw
		}
		userinfo := rest[:at]
		colon := strings.IndexByte(userinfo, ':')
		if colon < 0 {
			return raw
		}
		start := len(raw) - len(rest) + colon + 1
		return raw[:start] + "xxxxx" + raw[len(raw)-len(rest)+at:]
	}
	if u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Fraction reads a number f with 0 < f ≤ 1, such as 0.9.
func (r *Reader) Fraction(name string, def float64) float64 {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f > 0 && f <= 1) {
		r.bad(name, v, "want a fraction above 0 and at most 1, e.g. 0.9")
		return def
	}
	return f
}

// Keys reads a comma-separated list of API keys (INGEST_KEYS, QUERY_KEYS). Unset means
// none. A key is a secret: errors name the variable and the key's position, never the
// key. A key may not contain ':' (HTTP Basic would split it) or spaces and control
// characters (HTTP headers would mangle them).
func (r *Reader) Keys(name string) []string {
	v := r.getenv(name)
	if v == "" {
		return nil
	}
	var keys []string
	bad := false
	for i, k := range strings.Split(v, ",") {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if strings.ContainsFunc(k, func(c rune) bool { return c == ':' || c <= ' ' || c == 0x7f }) {
			r.errs = append(r.errs, fmt.Errorf("%s: key %d contains ':', a space or a control character", name, i+1))
			bad = true
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 && !bad {
		r.errs = append(r.errs, fmt.Errorf("%s is set but holds no key; unset it to leave the API open", name))
	}
	return keys
}

// HTTPTimeouts bound the phases of one HTTP exchange, so that a slow or idle client
// cannot hold a connection (and a handler) for long.
type HTTPTimeouts struct {
	ReadHeader time.Duration // HTTP_READ_HEADER_TIMEOUT: request line and headers
	Read       time.Duration // HTTP_READ_TIMEOUT: the whole request, body included
	Write      time.Duration // HTTP_WRITE_TIMEOUT: from the end of the headers to the end of the answer
	Idle       time.Duration // HTTP_IDLE_TIMEOUT: a kept-alive connection between requests
}

// DefaultHTTPTimeouts are the HTTP_* defaults.
var DefaultHTTPTimeouts = HTTPTimeouts{
	ReadHeader: 5 * time.Second,
	Read:       10 * time.Second,
	Write:      30 * time.Second,
	Idle:       120 * time.Second,
}

// HTTPTimeouts reads HTTP_READ_HEADER_TIMEOUT, HTTP_READ_TIMEOUT, HTTP_WRITE_TIMEOUT and
// HTTP_IDLE_TIMEOUT.
func (r *Reader) HTTPTimeouts() HTTPTimeouts {
	d := DefaultHTTPTimeouts
	return HTTPTimeouts{
		ReadHeader: r.Duration("HTTP_READ_HEADER_TIMEOUT", d.ReadHeader, 10*time.Millisecond),
		Read:       r.Duration("HTTP_READ_TIMEOUT", d.Read, 10*time.Millisecond),
		Write:      r.Duration("HTTP_WRITE_TIMEOUT", d.Write, 10*time.Millisecond),
		Idle:       r.Duration("HTTP_IDLE_TIMEOUT", d.Idle, 10*time.Millisecond),
	}
}

// BoundRedis bounds every Redis call made with opt by d: dialing, reading, writing,
// and waiting for a pooled connection.
func BoundRedis(opt *redis.UniversalOptions, d time.Duration) {
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = d, d, d, d
}

// StatsRetention reads how long each resolution of statistics buckets is kept after
// the bucket's end (STATS_RETENTION_MINUTE, _HOUR, _DAY, _PRODUCT_HOUR,
// _PRODUCT_DAY). The processor expires buckets by it, and queryapi reports a bucket
// past it as missing rather than as zero, so both must be given the same values.
func (r *Reader) StatsRetention() events.Retention {
	d := events.DefaultRetention
	return events.Retention{
		Minute:      r.Duration("STATS_RETENTION_MINUTE", d.Minute, time.Minute),
		Hour:        r.Duration("STATS_RETENTION_HOUR", d.Hour, time.Hour),
		Day:         r.Duration("STATS_RETENTION_DAY", d.Day, 24*time.Hour),
		ProductHour: r.Duration("STATS_RETENTION_PRODUCT_HOUR", d.ProductHour, time.Hour),
		ProductDay:  r.Duration("STATS_RETENTION_PRODUCT_DAY", d.ProductDay, 24*time.Hour),
	}
}
