package aggregate

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
)

// BenchmarkIncrements is the processor's CPU per event before the script runs: summing
// a batch of 3,000 events and encoding it. zipf is the bench tool's shop-like traffic;
// uniform touches a new user and product with every event (summing saves nothing).
//
//	go test -run '^$' -bench Increments ./internal/aggregate/
func BenchmarkIncrements(b *testing.B) {
	for _, w := range []struct {
		name string
		ids  func(zu, zp *rand.Zipf, i int) (user, product int)
	}{
		{"zipf", func(zu, zp *rand.Zipf, _ int) (int, int) { return int(zu.Uint64()), int(zp.Uint64()) }},
		{"uniform", func(_, _ *rand.Zipf, i int) (int, int) { return i, i * 7 }},
	} {
		b.Run(w.name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			zu, zp := rand.NewZipf(r, 1.1, 1, 99_999), rand.NewZipf(r, 1.1, 1, 9_999)
			batch := make([]events.Event, 3000)
			for i := range batch {
				u, p := w.ids(zu, zp, i)
				e := events.Event{UserID: "u" + strconv.Itoa(100_000+u), ProductID: "p" + strconv.Itoa(10_000+p)}
				switch i % 10 {
				case 7, 8:
					e.Type = events.PageView
				case 9:
					e.Type, e.DurationMs = events.Dwell, int64(500+i)
				}
				batch[i] = e
			}
			in := NewIncrements(events.NewKeys("bench").Gen(1), events.DefaultRetention)
			var argv []any
			now := time.Date(2026, 11, 30, 12, 0, 30, 0, time.UTC).UnixMilli()
			b.ReportAllocs()
			for b.Loop() {
				in.Reset(now)
				for i := range batch {
					in.Add(&batch[i], now-int64(i)*30) // a batch of the last 90 s
				}
				argv = in.AppendArgs(argv[:0], 3)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/event")
			b.ReportMetric(float64(len(argv))/float64(len(batch)), "args/event")
		})
	}
}
