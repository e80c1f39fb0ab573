package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/clickstream/pipeline/events"
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
//
// With several partitions (events.Layout), each series has a partition label, the
// partition's number, and the pipeline reads every partition in one round trip per node.
type StreamStats struct {
	rdb                         redis.UniversalClient
	parts                       []streamPair
	timeout                     time.Duration
	errors                      prometheus.Counter
	length, lag, pending, dlLen *prometheus.Desc
}

// streamPair is one partition's stream and dead-letter stream, and its label value ("" for
// the single stream of one partition).
type streamPair struct{ stream, deadLetter, label string }

// NewStreamStats returns the collector for stream and its dead-letter stream. failures
// counts failed reads (redis_errors_total{op="stats"}, say).
func NewStreamStats(rdb redis.UniversalClient, stream, deadLetter string, timeout time.Duration, failures prometheus.Counter) *StreamStats {
	return newStreamStats(rdb, []streamPair{{stream: stream, deadLetter: deadLetter}}, nil, timeout, failures)
}

// NewLayoutStats returns the collector for every partition of l: with one partition it
// is NewStreamStats of its streams, with no partition label.
func NewLayoutStats(rdb redis.UniversalClient, l events.Layout, timeout time.Duration, failures prometheus.Counter) *StreamStats {
	if l.Count() == 1 {
		k := l.Partition(0)
		return NewStreamStats(rdb, k.Stream(), k.DeadLetter(), timeout, failures)
	}
	parts := make([]streamPair, l.Count())
	for p, k := range l.Partitions() {
		parts[p] = streamPair{stream: k.Stream(), deadLetter: k.DeadLetter(), label: strconv.Itoa(p)}
	}
	return newStreamStats(rdb, parts, []string{"partition"}, timeout, failures)
}

func newStreamStats(rdb redis.UniversalClient, parts []streamPair, labels []string, timeout time.Duration, failures prometheus.Counter) *StreamStats {
	group := append([]string{"group"}, labels...)
	return &StreamStats{
		rdb: rdb, parts: parts, timeout: timeout, errors: failures,
		length:  prometheus.NewDesc("stream_length", "Entries in the event stream.", labels, nil),
		lag:     prometheus.NewDesc("consumer_group_lag", "Entries of the stream not yet delivered to the consumer group.", group, nil),
		pending: prometheus.NewDesc("consumer_group_pending", "Entries delivered to the consumer group and not yet acked.", group, nil),
		dlLen:   prometheus.NewDesc("dead_letter_length", "Entries in the dead-letter stream.", labels, nil),
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
	infos := make([]*lag.Cmds, len(s.parts))
	dlLens := make([]*redis.IntCmd, len(s.parts))
	for i, p := range s.parts {
		infos[i] = lag.Queue(ctx, pipe, p.stream)
		dlLens[i] = pipe.XLen(ctx, p.deadLetter)
	}
	// Exec returns the first failed command's error, or an error met while setting up
	// the connection, which leaves the commands without error or reply. Before the first
	// event there is no stream: XINFO fails with "no such key", and there are no groups.
	_, err := pipe.Exec(ctx)
	if err != nil && !generations.IsNoStream(err) {
		s.errors.Inc()
		return
	}
	var out []prometheus.Metric
	for i, p := range s.parts {
		stream, groups, ierr := infos[i].Result()
		if ierr != nil || dlLens[i].Err() != nil {
			s.errors.Inc()
			return
		}
		labels := []string{}
		if p.label != "" {
			labels = append(labels, p.label)
		}
		out = append(out,
			prometheus.MustNewConstMetric(s.length, prometheus.GaugeValue, float64(stream.Length), labels...),
			prometheus.MustNewConstMetric(s.dlLen, prometheus.GaugeValue, float64(dlLens[i].Val()), labels...))
		for _, g := range groups {
			gl := append([]string{g.Name}, labels...)
			out = append(out, prometheus.MustNewConstMetric(s.pending, prometheus.GaugeValue, float64(g.Pending), gl...))
			if n := lag.Of(stream, g); n >= 0 {
				out = append(out, prometheus.MustNewConstMetric(s.lag, prometheus.GaugeValue, float64(n), gl...))
			}
		}
	}
	for _, m := range out {
		ch <- m
	}
}
