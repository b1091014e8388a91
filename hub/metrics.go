package hub

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the hub's Prometheus collectors. They register on the
// Registerer given to NewMetrics, never on a global one, so two hubs can
// run in one process.
type Metrics struct {
	subscribers prometheus.Gauge
	publishes   prometheus.Counter
	deliveries  prometheus.Counter
	slow        prometheus.Counter
	publishLat  prometheus.Histogram
	overflows   prometheus.Counter
	epochs      prometheus.Counter
	lostSubs    prometheus.Counter
	reg         prometheus.Registerer
}

// NewMetrics creates the hub's collectors and registers them on reg; a nil
// reg keeps them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_subscribers", Help: "Open subscriptions.",
		}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_updates_published_total", Help: "Updates made durable and accepted.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_deliveries_total", Help: "Frames written to subscribers, live and replayed.",
		}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_slow_subscriber_disconnects_total", Help: "Subscribers disconnected for exceeding their queue budget.",
		}),
		publishLat: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_publish_duration_seconds",
			Help:    "Time to make an update durable.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		overflows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_feed_overflows_total",
			Help: "Times the dispatcher fell so far behind the history's feed that it read updates back from the history instead.",
		}),
		epochs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_history_epoch_changes_total",
			Help: "Times the history was found replaced (a new epoch); every stream is then ended.",
		}),
		lostSubs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_lost_subscriptions_total",
			Help: "Subscriptions ended because updates they may have wanted left the history before delivery.",
		}),
		reg: reg,
	}
	if reg != nil {
		reg.MustRegister(m.subscribers, m.publishes, m.deliveries, m.slow, m.publishLat, m.overflows, m.epochs, m.lostSubs)
	}
	return m
}

// bindHub registers the gauges computed from the hub's state on scrape.
func (m *Metrics) bindHub(h *Hub) {
	if m.reg == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_queue_bytes", Help: "Bytes waiting in subscriber queues.",
	}, func() float64 {
		var n int
		h.subs.each(func(s *Subscriber) { n += s.QueuedBytes() })
		return float64(n)
	}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_write_delay_seconds", Help: "Least time between two writes to one stream, fixed or set by load.",
	}, func() float64 { return h.WriteDelay().Seconds() }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_dispatch_lag_seconds", Help: "How long the oldest update handed over by the history's feed has waited to be offered to subscribers.",
	}, func() float64 { return h.DispatchLag().Seconds() }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_overloaded", Help: "1 while the hub is overloaded (dispatch lag or CPU wait past its bound) and sheds new subscriptions.",
	}, func() float64 {
		if h.Overloaded() {
			return 1
		}
		return 0
	}))
	if st, ok := h.engine.(Stats); ok {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_history_updates", Help: "Updates retained in the history.",
		}, func() float64 { return float64(st.HistoryLen()) }))
	}
}

func (m *Metrics) subscribed(d int) { m.subscribers.Add(float64(d)) }
func (m *Metrics) slowDisconnect()  { m.slow.Inc() }
func (m *Metrics) feedDropped()     { m.overflows.Inc() }
func (m *Metrics) epochChanged()    { m.epochs.Inc() }
func (m *Metrics) lost()            { m.lostSubs.Inc() }
func (m *Metrics) delivered(n int) {
	if n > 0 {
		m.deliveries.Add(float64(n))
	}
}
func (m *Metrics) published(d time.Duration) {
	m.publishes.Inc()
	m.publishLat.Observe(d.Seconds())
}
