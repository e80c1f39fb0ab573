package main

import (
	"net"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/metrics/metricstest"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/server/servertest"
)

// After the processor has drained a stream with one poison entry in it, /metrics says
// so exactly: every event applied once, nothing skipped or dropped, one dead letter,
// every entry in some batch, the group with nothing left to read or ack, and no Redis
// error.
func TestMetrics(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	evs := randomEvents(11, 1000, 20, 10)
	p.xadd(t, evs[:400])
	p.xaddRaw(t, "foo", "bar")
	p.xadd(t, evs[400:])

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	url := base + "/metrics"
	p.startProcessorOn(t, "proc-m", map[string]string{"BATCH_SIZE": "100"}, ln)
	p.waitDrained(t)
	p.assertTotals(t, evs)

	// The group is drained once the apply script has run; the process counts the
	// batch when the script's answer is back, a moment later.
	var m metricstest.Samples
	for i := 0; ; i++ {
		m = metricstest.Scrape(t, url)
		if m["processor_events_applied_total"] == float64(len(evs)) || i == 400 {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	group := `{group="` + p.gen.Group() + `"}`
	m.Check(t, map[string]float64{
		`processor_events_applied_total`: float64(len(evs)),
		`processor_events_skipped_total`: 0,
		`processor_dead_lettered_total`:  1,
		`processor_events_dropped_total`: 0,
		`processor_batch_size_sum`:       float64(len(evs) + 1), // the poison entry is acked in a batch too
		`stream_length`:                  float64(len(evs) + 1),
		`consumer_group_lag` + group:     0,
		`consumer_group_pending` + group: 0,
		`dead_letter_length`:             1,
		`redis_errors_total{op="read"}`:  0,
		`redis_errors_total{op="apply"}`: 0,
		`redis_errors_total{op="claim"}`: 0,
		`redis_errors_total{op="reap"}`:  0,
		`redis_errors_total{op="stats"}`: 0,
	})
	if n := m["processor_batch_size_count"]; n < 11 || m["processor_apply_seconds_count"] != n {
		t.Errorf("%g batches, %g applies timed; want at least 11 (1001 entries, BATCH_SIZE 100) and one per batch",
			n, m["processor_apply_seconds_count"])
	}
	// HEAD is answered wherever GET is, as GET would be without the body.
	servertest.CheckHead(t, base, "/healthz", "/readyz", "/metrics", "/nope")
}
