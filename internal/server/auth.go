package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// RequireKey returns middleware that lets a request through only when it carries one of
// keys: as HTTP Basic credentials whose username is the key (the password is ignored,
// and is usually empty: that is how Segment's libraries send a write key), or as
// "Authorization: Bearer <key>". Anything else is a 401 whose body says only
// "unauthorized". With no keys the middleware lets everything through.
//
// Keys are compared by their SHA-256 sums, with subtle.ConstantTimeCompare, against
// every key without stopping at a match, so the time taken says nothing about how much
// of a key was right, which key matched, or how long the keys are.
func RequireKey(realm string, keys []string) echo.MiddlewareFunc {
	if len(keys) == 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	sums := make([][sha256.Size]byte, len(keys))
	for i, k := range keys {
		sums[i] = sha256.Sum256([]byte(k))
	}
	challenge := [2]string{`Basic realm="` + realm + `"`, `Bearer realm="` + realm + `"`}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			key, ok := presentedKey(c.Request())
			sum := sha256.Sum256([]byte(key))
			match := 0
			for i := range sums {
				match |= subtle.ConstantTimeCompare(sum[:], sums[i][:])
			}
			if !ok || match != 1 {
				h := c.Response().Header()
				h.Set("WWW-Authenticate", challenge[0])
				h.Add("WWW-Authenticate", challenge[1])
				return &Status{Code: http.StatusUnauthorized, Msg: "unauthorized"}
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
