package metrics

import (
	"context"
	"time"

	"github.com/clickstream/pipeline/internal/generations"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// StreamStats is a prometheus.Collector that reads the state of the event stream from
// Redis each time it is scraped, in one round trip (XINFO STREAM, XINFO GROUPS, and XLEN
// of the dead-letter stream; all O(1) per group), so that the numbers are never older
// than the scrape and nothing polls Redis in between:
//
//	stream_length                   entries in the stream
//	consumer_group_lag{group}       entries not yet delivered to the group (lag.Of)
//	consumer_group_pending{group}   entries delivered to the group and not yet acked
//	dead_letter_length              entries in the dead-letter stream
//
// A group whose lag cannot be told (an entry after its position was deleted) has no
// lag series until it can. When Redis does not answer within the timeout, the scrape
// has none of these series and the errors counter goes up by one.
type StreamStats struct {
	rdb                         redis.UniversalClient
	stream, deadLetter          string
	timeout                     time.Duration
	errors                      prometheus.Counter
	length, lag, pending, dlLen *prometheus.Desc
}

// NewStreamStats returns the collector for stream and its dead-letter stream. failures
// counts failed reads (redis_errors_total{op="stats"}, say).
func NewStreamStats(rdb redis.UniversalClient, stream, deadLetter string, timeout time.Duration, failures prometheus.Counter) *StreamStats {
	return &StreamStats{
		rdb: rdb, stream: stream, deadLetter: deadLetter, timeout: timeout, errors: failures,
		length:  prometheus.NewDesc("stream_length", "Entries in the event stream.", nil, nil),
		lag:     prometheus.NewDesc("consumer_group_lag", "Entries of the stream not yet delivered to the consumer group.", []string{"group"}, nil),
		pending: prometheus.NewDesc("consumer_group_pending", "Entries delivered to the consumer group and not yet acked.", []string{"group"}, nil),
		dlLen:   prometheus.NewDesc("dead_letter_length", "Entries in the dead-letter stream.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (s *StreamStats) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.length
	ch <- s.lag
	ch <- s.pending
	ch <- s.dlLen
}

// Collect implements prometheus.Collector.
func (s *StreamStats) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	info := lag.Queue(ctx, pipe, s.stream)
	dlLen := pipe.XLen(ctx, s.deadLetter)
	// Exec returns the first failed command's error, or an error met while setting up
	// the connection, which leaves the commands without error or reply. Before the first
	// event there is no stream: XINFO fails with "no such key", and there are no groups.
	_, err := pipe.Exec(ctx)
	stream, groups, ierr := info.Result()
	if ierr != nil || dlLen.Err() != nil || err != nil && !generations.IsNoStream(err) {
		s.errors.Inc()
		return
	}
	ch <- prometheus.MustNewConstMetric(s.length, prometheus.GaugeValue, float64(stream.Length))
	ch <- prometheus.MustNewConstMetric(s.dlLen, prometheus.GaugeValue, float64(dlLen.Val()))
	for _, g := range groups {
		ch <- prometheus.MustNewConstMetric(s.pending, prometheus.GaugeValue, float64(g.Pending), g.Name)
		if n := lag.Of(stream, g); n >= 0 {
			ch <- prometheus.MustNewConstMetric(s.lag, prometheus.GaugeValue, float64(n), g.Name)
		}
	}
}
