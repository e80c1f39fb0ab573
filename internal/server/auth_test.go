package server

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// newAuthed returns a service with one guarded route, /v1/x, besides the open health
// endpoints, and a counter of how often the guarded handler ran.
func newAuthed(keys []string) (http.Handler, *int) {
	e := New(slog.New(slog.NewTextHandler(io.Discard, nil)), func(context.Context) error { return nil })
	calls := new(int)
	e.POST("/v1/x", func(c echo.Context) error {
		*calls++
		return c.JSON(http.StatusAccepted, map[string]int{"ok": 1})
	}, RequireKey("test", keys))
	return e, calls
}

func TestRequireKey(t *testing.T) {
	keys := []string{"wk_live_a1b2c3", "wk_live_second"}
	cases := []struct {
		name   string
		header string // Authorization; "" sends none
		want   int
	}{
		{"no header", "", 401},
		{"basic, key as user, empty password", basic("wk_live_a1b2c3", ""), 202},
		{"basic, second key", basic("wk_live_second", ""), 202},
		{"basic, password ignored", basic("wk_live_a1b2c3", "anything"), 202},
		{"basic scheme lower case", "basic " + base64.StdEncoding.EncodeToString([]byte("wk_live_a1b2c3:")), 202},
		{"bearer", "Bearer wk_live_a1b2c3", 202},
		{"bearer lower case, second key", "bearer wk_live_second", 202},
		{"bearer, extra spaces", "Bearer   wk_live_second", 202},
		{"basic, wrong key", basic("wk_live_a1b2c4", ""), 401},
		{"basic, key as password", basic("", "wk_live_a1b2c3"), 401},
		{"basic, prefix of a key", basic("wk_live_a1b2", ""), 401},
		{"basic, key plus suffix", basic("wk_live_a1b2c3x", ""), 401},
		{"basic, no colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("wk_live_a1b2c3")), 401},
		{"basic, not base64", "Basic wk_live_a1b2c3", 401},
		{"bearer, wrong key", "Bearer wk_live_nope", 401},
		{"bearer, empty", "Bearer ", 401},
		{"bearer, no space", "Bearerwk_live_a1b2c3", 401},
		{"bare key", "wk_live_a1b2c3", 401},
		{"other scheme", "Token wk_live_a1b2c3", 401},
		{"both keys joined", "Bearer wk_live_a1b2c3,wk_live_second", 401},
	}
	h, calls := newAuthed(keys)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := *calls
			req := httptest.NewRequest(http.MethodPost, "/v1/x", strings.NewReader("{}"))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == 202 {
				if *calls != before+1 {
					t.Errorf("handler ran %d times, want once", *calls-before)
				}
				return
			}
			if *calls != before {
				t.Errorf("handler ran for a refused request")
			}
			if got := strings.TrimSuffix(rec.Body.String(), "\n"); got != `{"error":"unauthorized"}` {
				t.Errorf("body %s, want {\"error\":\"unauthorized\"}", got)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			want := []string{`Basic realm="test"`, `Bearer realm="test"`}
			if got := rec.Header().Values("WWW-Authenticate"); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("WWW-Authenticate %q, want %q", got, want)
			}
		})
	}
}

// Health endpoints stay open when keys are set, and no keys means no check at all.
func TestRequireKeyLeavesHealthOpen(t *testing.T) {
	h, _ := newAuthed([]string{"wk_live_a1b2c3"})
	for _, path := range []string{"/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s without a key: %d, want 200", path, rec.Code)
		}
	}
	open, calls := newAuthed(nil)
	rec := httptest.NewRecorder()
	open.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/x", strings.NewReader("{}")))
	if rec.Code != http.StatusAccepted || *calls != 1 || rec.Header().Get("WWW-Authenticate") != "" {
		t.Errorf("no keys: status %d, handler ran %d times, WWW-Authenticate %q; want 202, once, none",
			rec.Code, *calls, rec.Header().Get("WWW-Authenticate"))
	}
}
