package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/labstack/echo/v4"
)

// Keyring holds a service's API keys and checks a presented key against them. Keys are
// compared by their SHA-256 sums, with subtle.ConstantTimeCompare, against every key
// without stopping at a match, so the time taken says nothing about how much of a key
// was right, which key matched, or how long the keys are.
type Keyring struct {
	sums  [][sha256.Size]byte
	realm string
}

// NewKeyring returns the keyring of keys, for the realm named in 401 challenges. With
// no keys it is open: everything is let through.
func NewKeyring(realm string, keys []string) *Keyring {
	k := &Keyring{sums: make([][sha256.Size]byte, len(keys)), realm: realm}
	for i, key := range keys {
		k.sums[i] = sha256.Sum256([]byte(key))
	}
	return k
}

// Open reports whether no key is needed.
func (k *Keyring) Open() bool { return len(k.sums) == 0 }

// Match reports whether key is one of the keys ("" never is).
func (k *Keyring) Match(key string) bool {
	sum := sha256.Sum256([]byte(key))
	match := 0
	for i := range k.sums {
		match |= subtle.ConstantTimeCompare(sum[:], k.sums[i][:])
	}
	return key != "" && match == 1
}

// Request reports whether r's Authorization header carries one of the keys: as HTTP
// Basic credentials whose username is the key, or as a Bearer token.
func (k *Keyring) Request(r *http.Request) bool {
	key, ok := presentedKey(r)
	return k.Match(key) && ok
}

// Unauthorized is the 401 for a request without a key: a body that says only
// "unauthorized", and a challenge for both schemes.
func (k *Keyring) Unauthorized(c echo.Context) error {
	h := c.Response().Header()
	h.Set("WWW-Authenticate", `Basic realm="`+k.realm+`"`)
	h.Add("WWW-Authenticate", `Bearer realm="`+k.realm+`"`)
	return &Status{Code: http.StatusUnauthorized, Msg: "unauthorized"}
}
