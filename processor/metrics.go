package main

import (
	"github.com/prometheus/client_golang/prometheus"
)

// consumerMetrics are a Consumer's measurements: per batch, never per entry. The
// counts of entries are the Consumer's own atomics, which exposeCounts puts on the
// registry as they are.
type consumerMetrics struct {
	batchSize    prometheus.Histogram // entries per applied batch
	applySeconds prometheus.Histogram // one successful apply (ApplyAt)
	readErrors   prometheus.Counter   // redis_errors_total{op="read"}
	applyErrors  prometheus.Counter   // redis_errors_total{op="apply"}
	claimErrors  prometheus.Counter   // redis_errors_total{op="claim"}
	reapErrors   prometheus.Counter   // redis_errors_total{op="reap"}
}

// newConsumerMetrics registers the histograms on reg. redisErrors must have the ops
// read (the generation pointer and the batch), apply (dead-letter publishes included),
// claim and reap.
func newConsumerMetrics(reg prometheus.Registerer, redisErrors *prometheus.CounterVec) *consumerMetrics {
	m := &consumerMetrics{
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "processor_batch_size",
			Help:    "Entries per batch applied (read, or claimed from another consumer).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 … 65536
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "processor_apply_seconds",
			Help:    "Time one batch's apply took: the ownership check, the ack and the increments, in one script call (two when some entries were already counted).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		readErrors:  redisErrors.WithLabelValues("read"),
		applyErrors: redisErrors.WithLabelValues("apply"),
		claimErrors: redisErrors.WithLabelValues("claim"),
		reapErrors:  redisErrors.WithLabelValues("reap"),
	}
	reg.MustRegister(m.batchSize, m.applySeconds)
	return m
}

// exposeCounts registers c's counts of entries on reg, with labels (nil, or the
// partition's) as constant labels.
func (c *Consumer) exposeCounts(reg prometheus.Registerer, labels prometheus.Labels) {
	counter := func(name, help string, load func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(load()) })
	}
	reg.MustRegister(
		counter("processor_events_applied_total", "Events counted into the aggregates by this process.", c.applied.Load),
		counter("processor_events_skipped_total", "Entries of batches this process read or claimed that another consumer had already counted (redeliveries); not counted again.", c.skipped.Load),
		counter("processor_dead_lettered_total", "Entries that could not be decoded, published to the dead-letter stream and acked.", c.deadLets.Load),
		counter("processor_events_dropped_total", "Entries of batches dropped because a rebuild replaced their generation, which had counted them already.", c.dropped.Load),
	)
}
