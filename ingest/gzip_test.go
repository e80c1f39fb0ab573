package main

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
)

func gzipped(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// bomb is n zero bytes, gzip-compressed: about n/1000 bytes that inflate to n.
func bomb(t *testing.T, n int) string {
	t.Helper()
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zero := make([]byte, 64<<10)
	for n > 0 {
		k := min(n, len(zero))
		zw.Write(zero[:k])
		n -= k
	}
	zw.Close()
	return b.String()
}

// Content-Encoding: gzip is read on every event endpoint, the pipeline's own and
// Segment's; MAX_BODY_BYTES (Segment's limits there) bounds the decompressed body and
// is enforced while decompressing, so a bomb gets 413 (400 from Segment's endpoints);
// a stream that is not gzip gets 400; other encodings stay 415. Nothing of a refused
// body is written, and the bytes held in flight are all given back.
func TestContentEncoding(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, nil)
	const ev = `{"user_id":"u1","product_id":"p1"}`
	ndjson := strings.Repeat(ev+"\n", 50)
	gz := gzipped(t, ev)
	corrupt := []byte(gzipped(t, ndjson))
	corrupt[len(corrupt)/2] ^= 0xff
	segBatch := `{"batch":[` + strings.Repeat(`{"type":"track","event":"Product Clicked","userId":"u2","properties":{"product_id":"p2"}},`, 9) +
		`{"type":"page","userId":"u2","properties":{"product_id":"p2"}}]}`
	incompressible := make([]byte, 1<<20+1000)
	rand.Read(incompressible)

	const bombSize = 512 << 20 // 512 MiB of zeros: about 500 KB compressed
	big := bomb(t, bombSize)
	if len(big) > 1<<20 {
		t.Fatalf("the bomb is %d bytes compressed, over MAX_BODY_BYTES itself", len(big))
	}
	small := bomb(t, 10<<20)   // a few KB
	medium := bomb(t, 100<<20) // about 100 KB, under Segment's 500 KiB compressed
	t.Logf("bombs: %d MiB in %d bytes, 10 MiB in %d bytes", bombSize>>20, len(big), len(small))

	for _, tc := range []struct {
		name, path, contentType, encoding, body string
		chunked                                 bool
		status                                  int
		msg                                     string
	}{
		{"gzip event", "/v1/events", "application/json", "gzip", gz, false, 202, ""},
		{"gzip NDJSON, chunked", "/v1/events", "application/x-ndjson", "gzip", gzipped(t, ndjson), true, 202, ""},
		{"x-gzip, to /click", "/click", "application/json", "x-gzip", gz, false, 202, ""},
		{"gzip Segment batch", "/v1/batch", "application/json", "GZIP", gzipped(t, segBatch), false, 200, ""},
		{"gzip, identity", "/v1/events", "application/json", "gzip, identity", gz, false, 202, ""},
		{"identity", "/v1/events", "application/json", "identity", ev, false, 202, ""},

		{"corrupt stream", "/v1/events", "application/x-ndjson", "gzip", string(corrupt), false, 400, "request body is not valid gzip: "},
		{"truncated stream", "/v1/events", "application/json", "gzip", gz[:len(gz)-6], false, 400, "request body is not valid gzip: unexpected EOF"},
		{"plain body labelled gzip", "/v1/events", "application/json", "gzip", ev, false, 400, "request body is not valid gzip: gzip: invalid header"},
		{"empty body labelled gzip", "/v1/batch", "application/json", "gzip", "", false, 400, "request body is not valid gzip: unexpected EOF"},
		{"corrupt stream to Segment", "/v1/track", "application/json", "gzip", string(corrupt), false, 400, "request body is not valid gzip: "},
		{"bomb of 10 MiB", "/v1/events", "application/json", "gzip", small, false, 413, "request body larger than 1048576 bytes once decompressed"},
		{"bomb of 512 MiB, chunked", "/v1/events", "application/x-ndjson", "gzip", big, true, 413, "request body larger than 1048576 bytes once decompressed"},
		{"bomb to Segment's batch", "/v1/batch", "application/json", "gzip", medium, false, 400,
			"request body larger than 512000 bytes once decompressed (Segment's limit per batch; the SDKs stay under it)"},
		{"bomb to Segment's track", "/v1/track", "", "gzip", small, true, 400,
			"request body larger than 32768 bytes once decompressed (Segment's limit per call; the SDKs stay under it)"},
		{"compressed body over the limit", "/v1/events", "application/json", "gzip", string(incompressible), false, 413, "request body larger than 1048576 bytes"},

		{"br", "/v1/events", "application/json", "br", ev, false, 415, `Content-Encoding "br" is not supported; send the body uncompressed or gzip-compressed`},
		{"identity, deflate", "/v1/batch", "application/json", "identity, deflate", segBatch, false, 415, `Content-Encoding "deflate" is not supported; send the body uncompressed or gzip-compressed`},
		{"gzip twice", "/v1/events", "application/json", "gzip, gzip", gz, false, 415, `Content-Encoding "gzip" is not supported; send the body uncompressed or gzip-compressed`},
	} {
		var r io.Reader = strings.NewReader(tc.body)
		if tc.chunked {
			r = io.MultiReader(r)
		}
		req, err := http.NewRequest(http.MethodPost, svc.base+tc.path, r)
		if err != nil {
			t.Fatal(err)
		}
		if tc.contentType != "" {
			req.Header.Set("Content-Type", tc.contentType)
		}
		req.Header.Set("Content-Encoding", tc.encoding)
		a, err := do(svc.client, req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if a.status != tc.status {
			t.Errorf("%s: status %d, want %d; body %s", tc.name, a.status, tc.status, a.body)
			continue
		}
		switch {
		case tc.status == 202:
			accepted(t, a)
		case tc.status == 200:
			if got := segmentAnswer(t, a); got.Accepted != 10 {
				t.Errorf("%s: %+v, want 10 accepted", tc.name, got)
			}
		default:
			if msg := *errorOf(t, a).Error; !strings.HasPrefix(msg, tc.msg) || (!strings.HasSuffix(tc.msg, ": ") && msg != tc.msg) {
				t.Errorf("%s: error %q, want %q", tc.name, msg, tc.msg)
			}
		}
	}
	if n := svc.streamLen(t); n != 1+50+1+10+1+1 {
		t.Errorf("stream length %d, want 64: the accepted bodies only", n)
	}
	svc.waitMetric(t, "ingest_inflight_body_bytes", eq(0))
	metricstest.Scrape(t, svc.base+"/metrics").Check(t, map[string]float64{
		`ingest_rejected_requests_total{reason="content_encoding"}`: 3,
		`ingest_rejected_requests_total{reason="invalid"}`:          5,
		`ingest_rejected_requests_total{reason="too_large"}`:        5,
		`ingest_events_total{result="accepted"}`:                    64,
	})
}

// A gzip body counts against MAX_INFLIGHT_BYTES by what it holds decompressed, and by
// the decompressor's state, not by its few compressed bytes: with most of the limit held
// by another body, a small gzip body that inflates past what is left is refused with
// 503, and accepted once the other body is done.
func TestGzipCountsDecompressedBytesInFlight(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	const size = 100_000
	svc := startIngest(t, rs, map[string]string{"MAX_BODY_BYTES": "100000", "MAX_INFLIGHT_BYTES": "150000",
		"SEGMENT_MAX_BATCH_BYTES": "100000", "HTTP_READ_TIMEOUT": "1m"})
	held := svc.dial(t)
	body := paddedBatch(10, size)
	held.send(postHead(size) + body[:size-1])
	svc.waitMetric(t, "ingest_inflight_body_bytes", eq(size))

	// 80 KB of events in about 1 KB of gzip.
	big := paddedBatch(10, 80_000)
	gz := gzipped(t, big)
	post := func() answer {
		req, _ := http.NewRequest(http.MethodPost, svc.base+"/v1/events", strings.NewReader(gz))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", "gzip")
		a, err := do(svc.client, req)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := post()
	if a.status != http.StatusServiceUnavailable || !strings.Contains(*errorOf(t, a).Error, "MAX_INFLIGHT_BYTES") {
		t.Fatalf("%d-byte gzip body of %d bytes with %d of 150000 in flight: %d %s, want 503 MAX_INFLIGHT_BYTES",
			len(gz), len(big), size, a.status, a.body)
	}
	held.send(body[size-1:])
	accepted(t, held.mustAnswer("the held body"))
	if got := accepted(t, post()); got.Accepted != 10 {
		t.Errorf("the gzip body once the other is done: %+v, want 10 accepted", got)
	}
	svc.waitMetric(t, "ingest_inflight_body_bytes", eq(0))
}
