package redis

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's own figures. They exist whether or not a
// registry is given, so the engine's code never checks.
type metrics struct {
	rtt          *prometheus.HistogramVec
	rttOps       map[string]prometheus.Observer
	batch        prometheus.Histogram
	lag          prometheus.Histogram
	reconnects   prometheus.Counter
	epochChanges prometheus.Counter
	breaker      prometheus.Gauge
	resolved     prometheus.Counter
	unresolved   prometheus.Counter

	reg        prometheus.Registerer
	collectors []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_redis_roundtrip_seconds",
			Help:    "Round trips to Redis by operation (append includes WAIT when replicas must confirm; wait is the feed's blocking read).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, []string{"op"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_redis_append_batch_size",
			Help:    "Updates sent to Redis in one append script (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_redis_feed_lag_seconds",
			Help:    "Time from an update's publication (on any node) to its hand-over to this node's dispatcher.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_redis_reconnects_total",
			Help: "Times the feed found Redis again after losing it.",
		}),
		epochChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_redis_epoch_changes_total",
			Help: "Times the history in Redis was found replaced (restarted empty, flushed, failed over to a stale replica).",
		}),
		breaker: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_redis_breaker_state",
			Help: "The append circuit breaker: 0 closed, 1 half-open, 2 open (publishes refused at once).",
		}),
	}
	m.resolved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_redis_appends_resolved_total",
		Help: "Appends whose answer from Redis was lost and which the node then found stored (acknowledged after all).",
	})
	m.unresolved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_redis_appends_unresolved_total",
		Help: "Appends whose answer from Redis was lost and whose outcome the node could not learn in time: refused, though they may be stored.",
	})
	m.rttOps = make(map[string]prometheus.Observer)
	for _, op := range []string{"append", "read", "lookup", "feed", "wait", "trim", "init", "resolve",
		"presence_set", "presence_delete", "presence_list", "presence_of", "renew", "nodes", "claim", "forget", "revoke", "revocations", "kick", "kicks",
		"park", "take_parked", "unpark"} {
		m.rttOps[op] = m.rtt.WithLabelValues(op)
	}
	return m
}

func (m *metrics) roundTrip(op string, d time.Duration) {
	m.rttOps[op].Observe(d.Seconds())
}

func (m *metrics) register(reg prometheus.Registerer, e *Engine) error {
	cs := []prometheus.Collector{m.rtt, m.batch, m.lag, m.reconnects, m.epochChanges, m.breaker, m.resolved, m.unresolved,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_redis_up",
			Help: "1 when the feed's last round trip to Redis succeeded.",
		}, func() float64 {
			if e.down.Load() == nil {
				return 1
			}
			return 0
		}),
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("redis: register metrics: %w", err)
		}
	}
	m.reg, m.collectors = reg, cs
	return nil
}

func (m *metrics) unregister() {
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
