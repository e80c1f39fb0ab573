package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
)

// These tests drive ingest with Segment's Node SDK, @segment/analytics-node 3.1.0, run
// by node as a process (testdata/segment-node/send.js), its dependencies installed by
// npm ci from the committed lock file. They need node (20 or later) and npm: without
// them they are skipped, except in CI (CI=true), where they fail.

// nodeCall is one call of the SDK: analytics[method](args).
type nodeCall struct {
	Method string         `json:"method"`
	Args   map[string]any `json:"args"`
}

// nodeResult is what send.js prints: the calls the SDK delivered or gave up on, its
// error events, and the status of every response it got.
type nodeResult struct {
	Delivered int      `json:"delivered"`
	Failed    int      `json:"failed"`
	Errors    []string `json:"errors"`
	Statuses  []int    `json:"statuses"`
}

const nodeFixture = "testdata/segment-node"

var (
	npmOnce sync.Once
	npmErr  string
)

// needNode skips the test where node or npm is missing (fails it in CI), and installs
// the fixture's dependencies once per test binary.
func needNode(t *testing.T) {
	t.Helper()
	for _, prog := range []string{"node", "npm"} {
		if _, err := exec.LookPath(prog); err != nil {
			msg := prog + " not found on PATH: the Node SDK tests need node 20 or later and npm (scripts/deps.sh node installs them)"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	npmOnce.Do(func() {
		// npm ci (re)installs exactly the locked versions; it is skipped when the
		// installed tree is the one of the lock file already.
		lock, _ := os.ReadFile(filepath.Join(nodeFixture, "package-lock.json"))
		installed, _ := os.ReadFile(filepath.Join(nodeFixture, "node_modules", ".package-lock.json"))
		if len(installed) > 0 && sameLockedPackages(lock, installed) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = nodeFixture
		if out, err := cmd.CombinedOutput(); err != nil {
			npmErr = "npm ci in " + nodeFixture + ": " + err.Error() + "\n" + string(out)
		}
	})
	if npmErr != "" {
		t.Fatal(npmErr)
	}
}

// sameLockedPackages reports whether npm's record of an installed tree
// (node_modules/.package-lock.json) lists the packages of the lock file, at the same
// versions and integrity.
func sameLockedPackages(lock, installed []byte) bool {
	type pkgs struct {
		Packages map[string]struct{ Version, Integrity string } `json:"packages"`
	}
	var l, i pkgs
	if json.Unmarshal(lock, &l) != nil || json.Unmarshal(installed, &i) != nil {
		return false
	}
	delete(l.Packages, "") // the fixture itself
	if len(l.Packages) != len(i.Packages) {
		return false
	}
	for k, v := range l.Packages {
		if i.Packages[k] != v {
			return false
		}
	}
	return true
}

// runNode runs send.js with calls against host and returns what the SDK reported.
func runNode(t *testing.T, host, key string, flushAt int, calls []nodeCall) nodeResult {
	t.Helper()
	plan, err := json.Marshal(map[string]any{"host": host, "writeKey": key, "flushAt": flushAt, "calls": calls})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "send.js")
	cmd.Dir = nodeFixture
	cmd.Stdin = bytes.NewReader(plan)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node send.js: %v\n%s", err, stderr.String())
	}
	var res nodeResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("node send.js printed %q: %v\n%s", stdout.String(), err, stderr.String())
	}
	if v, err := exec.Command("node", "--version").Output(); err == nil {
		t.Logf("node %s: %+v", strings.TrimSpace(string(v)), res)
	}
	return res
}

// Tracks, pages and screens sent by analytics-node arrive and are counted exactly per
// user and product (it sends the key both as HTTP Basic and as the body's writeKey).
func TestAnalyticsNode(t *testing.T) {
	t.Parallel()
	needNode(t)
	rs := redistest.Start(t)
	const key = "wk_node_sdk"
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": key})
	tr := newSDKTraffic(300, 20) // the 20th step is a page without product
	res := runNode(t, svc.base, key, 50, tr.calls)
	if res.Delivered != len(tr.calls) || res.Failed != 0 {
		t.Fatalf("analytics-node: %+v; want all %d delivered", res, len(tr.calls))
	}
	for _, s := range res.Statuses {
		if s != 200 {
			t.Errorf("analytics-node got status %d; want 200 for every batch (%v)", s, res.Statuses)
		}
	}
	tr.check(t, svc)
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_events_total{result="accepted"}`:                             float64(tr.counted),
		`ingest_segment_dropped_total{reason="identify",result="ignored"}`:   50,
		`ingest_segment_dropped_total{reason="track_name",result="ignored"}`: 50,
		`ingest_segment_dropped_total{reason="product",result="rejected"}`:   1,
	})
}

// With a wrong key analytics-node delivers nothing (a 401 is final to it) and nothing
// is written.
func TestAnalyticsNodeWrongKey(t *testing.T) {
	t.Parallel()
	needNode(t)
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": "wk_right"})
	tr := newSDKTraffic(20, -1)
	res := runNode(t, svc.base, "wk_wrong", 50, tr.calls)
	if res.Delivered != 0 || res.Failed != len(tr.calls) {
		t.Errorf("analytics-node: %+v; want all %d failed", res, len(tr.calls))
	}
	if n := svc.streamLen(t); n != 0 {
		t.Errorf("stream length %d, want 0", n)
	}
}

// analytics-node also sends the write key as the body's writeKey, and that alone lets
// its batches in: a proxy in front of ingest drops the Authorization header.
func TestAnalyticsNodeKeyInBody(t *testing.T) {
	t.Parallel()
	needNode(t)
	rs := redistest.Start(t)
	const key = "wk_node_body"
	svc := startIngest(t, rs, map[string]string{"INGEST_KEYS": key})
	target, _ := url.Parse(svc.base)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = svc.newClient(0).Transport
	var stripped atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			stripped.Add(1)
		}
		r.Header.Del("Authorization")
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	tr := newSDKTraffic(60, -1)
	res := runNode(t, proxy.URL, key, 100, tr.calls)
	if res.Delivered != len(tr.calls) || res.Failed != 0 || stripped.Load() == 0 {
		t.Fatalf("analytics-node through the proxy: %+v, %d Authorization headers dropped; want all %d delivered",
			res, stripped.Load(), len(tr.calls))
	}
	tr.check(t, svc)
}
