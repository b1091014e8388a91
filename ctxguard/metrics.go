package ctxguard

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the guard's collectors, labelled by root name. The label set
// is bounded by maxRoots: names beyond it share OtherRoot, so a router
// that names roots by raw path, or a client walking random URLs, cannot
// grow the registry.
type metrics struct {
	running *prometheus.GaugeVec
	latency *prometheus.HistogramVec
	late    *prometheus.CounterVec

	maxRoots int
	byName   sync.Map // root name -> *series; read on every first Go
	other    *series
	full     atomic.Bool // maxRoots names are taken: spares the lock
	mu       sync.Mutex
	named    int // entries of byName that count against maxRoots
}

// series are one root name's collectors, looked up once per request.
type series struct {
	name    string
	running prometheus.Gauge
	latency prometheus.Observer
	late    prometheus.Counter
}

func (m *metrics) init(reg prometheus.Registerer, maxRoots int) {
	m.maxRoots = maxRoots
	m.running = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ctxguard_goroutines",
		Help: "Tracked goroutines running, by the root (route) of the request that started them.",
	}, []string{"root"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ctxguard_cancel_latency_seconds",
		Help: "Time from a request's cancellation to the exit of its last tracked goroutine, once per request that started any (0 when all had exited).",
		// 100 µs to about 53 s: past LateAfter's default, so the tail
		// of late goroutines is still told apart.
		Buckets: prometheus.ExponentialBuckets(0.0001, 3, 13),
	}, []string{"root"})
	m.late = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ctxguard_late_goroutines_total",
		Help: "Tracked goroutines reported still running LateAfter after their request ended.",
	}, []string{"root"})
	if reg != nil {
		reg.MustRegister(m.running, m.latency, m.late)
	}
	m.other = m.newSeries(OtherRoot)
	m.byName.Store(OtherRoot, m.other)
}

// series returns the collectors of a root name, making them on first use
// while fewer than maxRoots names have been seen, and OtherRoot's after.
func (m *metrics) series(name string) *series {
	if name == "" {
		name = UnknownRoot
	}
	if s, ok := m.byName.Load(name); ok {
		return s.(*series)
	}
	if m.full.Load() {
		return m.other
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.byName.Load(name); ok {
		return s.(*series)
	}
	if m.named >= m.maxRoots {
		m.full.Store(true)
		return m.other
	}
	m.named++
	s := m.newSeries(name)
	m.byName.Store(name, s)
	return s
}

func (m *metrics) newSeries(name string) *series {
	return &series{
		name:    name,
		running: m.running.WithLabelValues(name),
		latency: m.latency.WithLabelValues(name),
		late:    m.late.WithLabelValues(name),
	}
}
