package server

import (
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// RequireKey returns middleware that lets a request through only when it carries one of
// keys: as HTTP Basic credentials whose username is the key (the password is ignored,
// and is usually empty: that is how Segment's libraries send a write key), or as
// "Authorization: Bearer <key>". Anything else is a 401 whose body says only
// "unauthorized". With no keys the middleware lets everything through. Keys are
// compared in constant time (see Keyring).
func RequireKey(realm string, keys []string) echo.MiddlewareFunc {
	if len(keys) == 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	ring := NewKeyring(realm, keys)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !ring.Request(c.Request()) {
				return ring.Unauthorized(c)
			}
			return next(c)
		}
	}
}

// presentedKey returns the key of a request's Authorization header: the username of
// Basic credentials, or a Bearer token. Schemes are case-insensitive (RFC 9110).
func presentedKey(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, cred, found := strings.Cut(h, " ")
	if !found {
		return "", false
	}
	cred = strings.TrimLeft(cred, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return cred, cred != ""
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return "", false
		}
		user, _, found := strings.Cut(string(raw), ":")
		return user, found && user != ""
	}
	return "", false
}
