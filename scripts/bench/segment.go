package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
)

// targetSegmentRatio is the target for /v1/batch against the native NDJSON
// batch path, in events/s.
const targetSegmentRatio = 0.7

// segmentPer is the calls per /v1/batch request, and events per NDJSON request it is
// compared with: analytics-go sends up to 250 a batch and analytics-node 15, so 100 is
// what the SDKs send under load.
const segmentPer = 100

// ingestOnly is `-only ingest`: the batch paths of ingest side by side, in a minute.
func (b *bench) ingestOnly(ctx context.Context) error {
	b.logf("%d cores, redis %s; ingest batch paths only", cores(), b.version)
	if err := b.segmentRows(ctx, b.o.events/2, 3, true); err != nil {
		return err
	}
	return b.report()
}

// segmentRows measures, one after the other on one ingest, total events posted 100 per
// request over 8 connections as: NDJSON of the contract's fields (the native batch
// path); NDJSON with event_id and ts (what /v1/batch stores: an id makes each event go
// through the dedup script, which costs Redis about twice a plain XADD); and Segment
// batches as analytics-go writes them (messageId, timestamp, properties, the batch's
// sentAt and context), rounds times in turn. It adds a row for each, the median of its
// rounds, and /v1/batch's ratio to both NDJSON paths. With flush
// each measurement starts from an empty Redis (FLUSHALL): only where nothing else runs.
func (b *bench) segmentRows(ctx context.Context, total, rounds int, flush bool) error {
	addr := freeAddr()
	ingest, err := b.start("ingest-batch", []string{b.dir + "/ingest"},
		[]string{"REDIS_URL=" + b.url, "REDIS_NAMESPACE=batch", "INGEST_ADDR=" + addr, "LOG_LEVEL=warn"},
		"http://"+addr+"/readyz")
	if err != nil {
		return err
	}
	runs := []struct {
		name   string
		status int
		tmpl   func(j int, at time.Time) template
	}{
		{"NDJSON", http.StatusAccepted, ndjsonTemplate(false)},
		{"NDJSON with event_id and ts", http.StatusAccepted, ndjsonTemplate(true)},
		{"/v1/batch", http.StatusOK, segmentTemplate},
	}
	// Interleaved rounds, the median of each: the machine is shared, and a burst of other
	// work would otherwise land on one measurement only.
	all := make([][]float64, len(runs))
	for round := range rounds {
		for i, r := range runs {
			if flush {
				if err := b.rdb.FlushAll(ctx).Err(); err != nil {
					return err
				}
			}
			ingestCPU, redisCPU := cpuTime(ingest.Process.Pid), cpuTime(b.redis.Process.Pid)
			rate, err := b.templateLoad(addr, total, r.status, r.tmpl, uint64(round*len(runs)+i)<<40)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			all[i] = append(all[i], rate)
			n := float64(total / segmentPer * segmentPer)
			b.logf("%s, %d events/request: %s events/s; CPU per event: ingest %.2f µs, Redis %.2f µs", r.name, segmentPer, num(rate),
				float64(cpuTime(ingest.Process.Pid)-ingestCPU)/n/1e3, float64(cpuTime(b.redis.Process.Pid)-redisCPU)/n/1e3)
		}
	}
	rates := make([]float64, len(runs))
	for i := range all {
		slices.Sort(all[i])
		rates[i] = all[i][len(all[i])/2]
	}
	med := ""
	if rounds > 1 {
		med = fmt.Sprintf(" (median of %d)", rounds)
	}
	b.add(fmt.Sprintf("batch ingest, NDJSON %d events/request, 8 conns", segmentPer), num(rates[0])+" events/s"+med, "", "")
	b.add(fmt.Sprintf("batch ingest, NDJSON %d events/request with event_id and ts, 8 conns", segmentPer), num(rates[1])+" events/s"+med, "", "")
	b.add(fmt.Sprintf("Segment /v1/batch, %d calls/request as analytics-go sends them, 8 conns", segmentPer),
		fmt.Sprintf("%s events/s%s, %.2f × NDJSON, %.2f × NDJSON with event_id and ts", num(rates[2]), med, rates[2]/rates[0], rates[2]/rates[1]),
		fmt.Sprintf("≥ %.1f × NDJSON", targetSegmentRatio), pass(rates[2]/rates[0] >= targetSegmentRatio))
	return nil
}

// template is a request whose event ids are fixed-width runs of digits at known
// offsets, so that each request sent can carry ids of its own for the cost of a copy.
type template struct {
	req []byte
	ids []int // offsets of the 20-digit ids in req
}

const idWidth = 20

// placeholder is where an id goes while a template is built.
var placeholder = strings.Repeat("0", idWidth)

func makeTemplate(path, contentType, body string) template {
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", path, contentType, len(body))
	t := template{req: []byte(head + body)}
	for off := len(head); ; {
		k := strings.Index(string(t.req[off:]), placeholder)
		if k < 0 {
			return t
		}
		t.ids = append(t.ids, off+k)
		off += k + idWidth
	}
}

// fill writes the template into dst with ids first, first+1, …
func (t template) fill(dst []byte, first uint64) []byte {
	dst = append(dst[:0], t.req...)
	for k, off := range t.ids {
		id := first + uint64(k)
		for p := off + idWidth - 1; p >= off; p-- {
			dst[p] = byte('0' + id%10)
			id /= 10
		}
	}
	return dst
}

// ndjsonTemplate returns the maker of the j-th NDJSON body of segmentPer events, with
// an event_id and ts on each when ids.
func ndjsonTemplate(ids bool) func(j int, at time.Time) template {
	return func(j int, at time.Time) template {
		var sb strings.Builder
		for i := range segmentPer {
			line := eventJSON(syntheticEvent(j*segmentPer + i))
			if ids {
				line = strings.TrimSuffix(line, "}") + `,"event_id":"` + placeholder + `","ts":` + strconv.FormatInt(at.UnixMilli(), 10) + "}"
			}
			sb.WriteString(line)
			sb.WriteByte('\n')
		}
		return makeTemplate("/v1/events", "application/x-ndjson", sb.String())
	}
}

// segmentTemplate is the j-th Segment batch of segmentPer calls, the same events as
// ndjsonTemplate's, written as analytics-go 3.3.0 writes them.
func segmentTemplate(j int, at time.Time) template {
	ts := at.UTC().Format(time.RFC3339Nano)
	var sb strings.Builder
	sb.WriteString(`{"messageId":"` + placeholder + `","sentAt":"` + ts + `","batch":[`)
	for i := range segmentPer {
		if i > 0 {
			sb.WriteByte(',')
		}
		e := syntheticEvent(j*segmentPer + i)
		switch e.Type {
		case events.PageView:
			fmt.Fprintf(&sb, `{"type":"page","messageId":"%s","userId":%q,"name":"Product","timestamp":%q,"properties":{"product_id":%q,"price":19.99}}`,
				placeholder, e.UserID, ts, e.ProductID)
		case events.Dwell:
			fmt.Fprintf(&sb, `{"type":"track","messageId":"%s","userId":%q,"event":"Product Dwelled","timestamp":%q,"properties":{"duration_ms":%d,"product_id":%q}}`,
				placeholder, e.UserID, ts, e.DurationMs, e.ProductID)
		default:
			fmt.Fprintf(&sb, `{"type":"track","messageId":"%s","userId":%q,"event":"Product Clicked","timestamp":%q,"properties":{"price":19.99,"product_id":%q}}`,
				placeholder, e.UserID, ts, e.ProductID)
		}
	}
	sb.WriteString(`],"context":{"library":{"name":"analytics-go","version":"3.3.0"}}}`)
	return makeTemplate("/v1/batch", "application/json", sb.String())
}

// templateLoad posts total events, segmentPer a request, over 8 connections, each
// request made from one of 64 templates with ids of its own (from base up), and returns
// events/s.
func (b *bench) templateLoad(addr string, total, status int, mk func(j int, at time.Time) template, base uint64) (float64, error) {
	at := time.Now()
	tmpls := make([]template, 64)
	for j := range tmpls {
		tmpls[j] = mk(j, at)
	}
	requests := int64(total / segmentPer)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	start := time.Now()
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			errs <- postEach(addr, status, func() []byte {
				i := next.Add(1) - 1
				if i >= requests {
					return nil
				}
				t := tmpls[i%int64(len(tmpls))]
				buf = t.fill(buf, base+uint64(i)*uint64(len(t.ids)))
				return buf
			})
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(requests*segmentPer) / elapsed.Seconds(), nil
}

// postEach is postN for answers of any status: the requests next returns (until nil),
// on one connection, each expecting status.
func postEach(addr string, status int, next func() []byte) error {
	if status == http.StatusAccepted {
		return postN(addr, next)
	}
	// A 202 ends the loop where postN uses a 200 (/healthz): nothing answers a GET with
	// 202, so end with the one request whose status is known to differ.
	l := httpLoad{addr: addr, okStatus: status}
	var stop atomic.Bool
	var reqs atomic.Int64
	lat := make([]time.Duration, 0, 1024)
	i := 0
	l.request = func(c, _ int) []byte {
		r := next()
		if r == nil {
			stop.Store(true)
			return postRequest(addr, "/v1/events", "application/json", []byte(`{}`)) // a 400
		}
		return r
	}
	err := l.conn(0, &i, &stop, &reqs, &lat)
	if err != nil && stop.Load() && strings.Contains(err.Error(), "status 400") {
		return nil
	}
	return err
}
