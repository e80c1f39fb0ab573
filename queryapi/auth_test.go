package main

import (
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/internal/redistest"
)

// getAuth is a GET with an Authorization header ("" sends none).
func (a *api) getAuth(path, authorization string) response {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.base+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		a.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: strings.TrimSuffix(string(body), "\n")}
}

// With QUERY_KEYS set, every API route wants one of the keys (Bearer, or the username
// of HTTP Basic) and answers anything else 401 {"error":"unauthorized"} with a
// challenge, before looking at the request; health endpoints stay open.
func TestQueryKeys(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	const key = "rk_live_5e6f7a8b"
	a := startAPI(t, s, "QUERY_KEYS", "rk_other,"+key)
	a.hset(a.gen.User("u1"), 3, 2, 1000, 1)
	const user = `{"user_id":"u1","clicks":3,"page_views":2,"dwell_ms":1000,"dwell_count":1}`

	paths := []string{"/v1/users/u1", "/v1/products/p1", "/v1/products/top", "/v1/pipeline", "/user/u1/clicks",
		"/v1/users/a%20b"} // an invalid id: 401, not 400
	for _, path := range paths {
		for _, auth := range []string{"", "Bearer rk_live_5e6f7a8c", "Basic " + base64.StdEncoding.EncodeToString([]byte("nope:"))} {
			r := a.getAuth(path, auth)
			if r.status != http.StatusUnauthorized || r.body != `{"error":"unauthorized"}` {
				t.Errorf("GET %s (Authorization %q) = %d %s, want 401 {\"error\":\"unauthorized\"}", path, auth, r.status, r.body)
			}
			if ch := r.header.Values("WWW-Authenticate"); len(ch) != 2 || ch[0] != `Basic realm="queryapi"` || ch[1] != `Bearer realm="queryapi"` {
				t.Errorf("GET %s: WWW-Authenticate %q, want the Basic and Bearer challenges", path, ch)
			}
		}
	}
	for _, auth := range []string{"Bearer " + key, "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"))} {
		if r := a.getAuth("/v1/users/u1", auth); r.status != http.StatusOK || r.body != user {
			t.Errorf("GET /v1/users/u1 (Authorization %q) = %d %s, want 200 %s", auth, r.status, r.body, user)
		}
	}
	if r := a.getAuth("/user/u1/clicks", "Bearer rk_other"); r.status != http.StatusOK || r.body != "3" {
		t.Errorf("GET /user/u1/clicks with the other key = %d %s, want 200 3", r.status, r.body)
	}
	a.expect("/healthz", 200, `{"status":"ok"}`)
	a.expect("/readyz", 200, `{"status":"ready"}`)
}
