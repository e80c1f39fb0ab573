package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Eviction keeps the services off a Redis that may evict keys. Under memory pressure
// Redis with any maxmemory-policy but noeviction deletes keys without a sign, and every
// guarantee of the pipeline rests on its keys staying: with a volatile-* policy (the
// default of some managed Redis services) the dedup markers go first, being the only
// keys with a TTL, and client retries are then counted twice; with allkeys-* any key
// may go, a user's counts, the checkpoint or the stream itself. With noeviction Redis
// refuses the write instead, which ingest answers with a 503 and the client retries.
//
// So every service reads the policy at start and refuses to start under any other
// (AtStart), unless ALLOW_EVICTION=true, which runs anyway and logs a warning. The
// policy can change later (CONFIG SET), and a service started while Redis was
// unreachable has not seen it yet: readiness (Ready) reads it again, and reports not
// ready under an evicting policy, or ready with a warning where it is allowed.
type Eviction struct {
	rdb    redis.UniversalClient
	allow  bool // ALLOW_EVICTION
	logger *slog.Logger

	mu     sync.Mutex
	logged string // the last state logged by Ready, so that a lasting one is logged once
}

// NewEviction returns the check for rdb; allow is ALLOW_EVICTION.
func NewEviction(rdb redis.UniversalClient, allow bool, logger *slog.Logger) *Eviction {
	return &Eviction{rdb: rdb, allow: allow, logger: logger}
}

// NoEviction is the one maxmemory-policy under which Redis never deletes a key to make
// room.
const NoEviction = "noeviction"

// Verdict judges policy: nil for noeviction or a policy that could not be read (""); an
// error that names the setting, the policy and why, for an evicting policy without
// ALLOW_EVICTION; with it, a warning saying the same.
func (e *Eviction) Verdict(policy string) (warning string, err error) {
	if policy == "" || policy == NoEviction {
		return "", nil
	}
	why := "under memory pressure Redis deletes keys without a sign"
	switch {
	case strings.HasPrefix(policy, "volatile-"):
		why += ", and the dedup markers go first (the only keys with a TTL), so client retries are counted twice"
	case strings.HasPrefix(policy, "allkeys-"):
		why += ", any of them: a user's counts, the checkpoint or the stream itself"
	}
	if e.allow {
		return fmt.Sprintf("Redis maxmemory-policy is %s, not noeviction, and ALLOW_EVICTION=true: running anyway, but %s", policy, why), nil
	}
	return "", fmt.Errorf("Redis maxmemory-policy is %s, not noeviction: %s. Set maxmemory-policy noeviction in Redis (CONFIG SET maxmemory-policy noeviction, and in its config), or ALLOW_EVICTION=true to run anyway", policy, why)
}

// AtStart reads the policy once, at start, and returns an error when the service must
// not start: an evicting policy without ALLOW_EVICTION. Redis unreachable is not such an
// error (the services start and answer 503 until Redis is back; Ready checks the policy
// then), and neither is a Redis that lets the service read neither CONFIG nor INFO:
// that is logged as a warning.
func (e *Eviction) AtStart(ctx context.Context) error {
	policy, err := ReadPolicy(ctx, e.rdb)
	switch {
	case err != nil && isRedisUnavailable(err):
		e.logger.Warn("cannot read Redis's maxmemory-policy at start: Redis unreachable; readiness checks it once Redis answers", "err", err)
		return nil
	case err != nil:
		e.logger.Warn("cannot read Redis's maxmemory-policy; make sure it is noeviction, or Redis may evict keys without a sign", "err", err)
		return nil
	}
	warning, err := e.Verdict(policy)
	if err != nil {
		return err
	}
	if warning != "" {
		e.logger.Warn(warning, "maxmemory_policy", policy)
	} else {
		e.logger.Info("redis maxmemory-policy", "maxmemory_policy", policy)
	}
	e.mu.Lock()
	e.logged = policy
	e.mu.Unlock()
	return nil
}

// Ready is a readiness check: Redis answers, and its policy is noeviction (or could not
// be read: AtStart warned). Under an evicting policy it returns the Verdict's error,
// or, with ALLOW_EVICTION, a Warning: /readyz answers 200 with it.
func (e *Eviction) Ready(ctx context.Context) error {
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	policy, err := ReadPolicy(ctx, e.rdb)
	if err != nil {
		if isRedisUnavailable(err) {
			return err
		}
		return nil
	}
	warning, err := e.Verdict(policy)
	e.note(policy, err)
	if err != nil {
		return err
	}
	if warning != "" {
		return Warning(warning)
	}
	return nil
}

// note logs a change of policy seen by Ready, once.
func (e *Eviction) note(policy string, refused error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if policy == e.logged {
		return
	}
	e.logged = policy
	switch {
	case refused != nil:
		e.logger.Warn("not ready: "+refused.Error(), "maxmemory_policy", policy)
	case policy != NoEviction:
		e.logger.Warn("Redis maxmemory-policy changed to an evicting one; running anyway (ALLOW_EVICTION=true)", "maxmemory_policy", policy)
	default:
		e.logger.Info("redis maxmemory-policy", "maxmemory_policy", policy)
	}
}

// ReadPolicy returns Redis's maxmemory-policy, from CONFIG GET or, where CONFIG is not
// allowed (managed Redis services often rename it away, and an ACL may deny it), from
// INFO memory. An error that isRedisUnavailable reports means Redis did not answer;
// any other means it answered and told neither.
func ReadPolicy(ctx context.Context, rdb redis.UniversalClient) (string, error) {
	v, cerr := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if cerr == nil && v["maxmemory-policy"] != "" {
		return v["maxmemory-policy"], nil
	}
	if cerr != nil && isRedisUnavailable(cerr) {
		return "", cerr
	}
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		if isRedisUnavailable(err) {
			return "", err
		}
		return "", fmt.Errorf("CONFIG GET maxmemory-policy: %v; INFO memory: %w", cerr, err)
	}
	if p := PolicyFromInfo(info); p != "" {
		return p, nil
	}
	return "", errors.New("neither CONFIG GET maxmemory-policy nor INFO memory tells the policy")
}

// PolicyFromInfo returns the maxmemory_policy field of an INFO memory reply, or "".
func PolicyFromInfo(info string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, "maxmemory_policy:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Warning is what a readiness check returns for a service that is ready but runs in a
// state an operator should know about: /readyz answers 200 and shows it.
type Warning string

func (w Warning) Error() string { return string(w) }
