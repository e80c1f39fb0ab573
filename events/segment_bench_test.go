package events_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
)

// segmentBody is a batch of 100 calls as analytics-go writes them, and ndjsonBody the
// same events in the pipeline's own NDJSON, with event_id and ts.
func benchBodies() (segmentBody, ndjsonBody []byte) {
	ts := now.Add(-time.Second).Format(time.RFC3339Nano)
	var sb, nb strings.Builder
	sb.WriteString(`{"messageId":"b-1","sentAt":"` + ts + `","batch":[`)
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"type":"track","messageId":"4c1e8d3a-6b1f-4bd0-9d2e-%012d","userId":"u%06d","event":"Product Clicked","timestamp":%q,"properties":{"price":19.99,"product_id":"p%05d"}}`, i, i*7, ts, i*13)
		fmt.Fprintf(&nb, `{"user_id":"u%06d","product_id":"p%05d","event_id":"4c1e8d3a-6b1f-4bd0-9d2e-%012d","ts":%d}`+"\n", i*7, i*13, i, now.UnixMilli()-1000)
	}
	sb.WriteString(`],"context":{"library":{"name":"analytics-go","version":"3.3.0"}}}`)
	return []byte(sb.String()), []byte(nb.String())
}

func BenchmarkDecodeSegment(b *testing.B) {
	body, _ := benchBodies()
	m := &events.SegmentMapping{Click: map[string]bool{"Product Clicked": true}, MaxItemBytes: 32 << 10, MaxItems: 2500}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := events.DecodeSegment(body, events.SegmentBatch, m, now)
		if err != nil || len(res.Events) != 100 {
			b.Fatal(err, len(res.Events))
		}
	}
}

func BenchmarkDecodeRequestNDJSONWithIDs(b *testing.B) {
	_, body := benchBodies()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		evs, err := events.DecodeRequest(body, events.NDJSON, 1000, now)
		if err != nil || len(evs) != 100 {
			b.Fatal(err, len(evs))
		}
	}
}
