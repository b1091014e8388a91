package listener

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Listener's collectors. They exist even without a
// Registerer, so the accept path never checks.
type metrics struct {
	accepted      prometheus.Counter
	refused       *prometheus.CounterVec
	acceptErrors  *prometheus.CounterVec
	pauses        prometheus.Counter
	paused        prometheus.Gauge
	pausedSeconds prometheus.Counter
	reg           prometheus.Registerer
	registered    []prometheus.Collector
}

func newMetrics(l *Listener, cfg Config) (*metrics, error) {
	p := cfg.MetricsPrefix
	if p == "" {
		p = "listener_"
	}
	cl := cfg.MetricsLabels
	m := &metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: p + "accepted_total", ConstLabels: cl,
			Help: "Connections admitted and handed to Accept's caller.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: p + "refused_total", ConstLabels: cl,
			Help: "Connections accepted from the kernel and closed at once, by reason: limit (MaxConns), per_ip (MaxConnsPerIP), rate (Rate and Burst), overload (Config.Overloaded; with OverloadPause, the connections waiting in the accept queue when a socket stopped listening), no_fd (shed while out of file descriptors).",
		}, []string{"reason"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: p + "accept_errors_total", ConstLabels: cl,
			Help: "Failed accept calls, by errno: emfile (process out of file descriptors), enfile (system out of them), enobufs, enomem, other. Each is followed by a back-off of 5 ms doubling up to 1 s.",
		}, []string{"kind"}),
		pauses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: p + "overload_pauses_total", ConstLabels: cl,
			Help: "Times a socket stopped listening because the server was overloaded (Config.OverloadPause); meanwhile the kernel refuses new connections itself, and they are not counted in refused_total.",
		}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: p + "paused_sockets", ConstLabels: cl,
			Help: "Sockets not listening now because the server is overloaded.",
		}),
		pausedSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: p + "overload_paused_seconds_total", ConstLabels: cl,
			Help: "Time sockets spent not listening because the server was overloaded, summed over sockets.",
		}),
		reg: cfg.Registerer,
	}
	for _, r := range reasons {
		m.refused.WithLabelValues(string(r))
	}
	for _, k := range errorKinds {
		m.acceptErrors.WithLabelValues(k)
	}
	if m.reg == nil {
		return m, nil
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: p + "open_connections", ConstLabels: cl,
		Help: "Connections handed out and not yet closed; MaxConns caps it.",
	}, func() float64 { return float64(l.Open()) })
	cs := []prometheus.Collector{open, m.accepted, m.refused, m.acceptErrors}
	if cfg.Overloaded != nil && cfg.OverloadPause > 0 {
		cs = append(cs, m.pauses, m.paused, m.pausedSeconds)
	}
	if kc := newKernelCollector(l, p, cl); kc != nil {
		cs = append(cs, kc)
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			m.unregister()
			return nil, fmt.Errorf("register metrics: %w", err)
		}
		m.registered = append(m.registered, c)
	}
	return m, nil
}

func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

// kernelCollector reads, at scrape time, what only the kernel knows: the
// depth of each socket's accept queue, and the namespace-wide counts of
// connections dropped because an accept queue was full.
type kernelCollector struct {
	l                        *Listener
	queueLen, queueMax       *prometheus.Desc
	overflows, drops         *prometheus.Desc
	readNetstat              func() (map[string]uint64, error)
	withQueues, withCounters bool
}

func newKernelCollector(l *Listener, p string, cl prometheus.Labels) *kernelCollector {
	kc := &kernelCollector{
		l: l,
		queueLen: prometheus.NewDesc(p+"accept_queue_length",
			"Connections completed by the kernel and waiting in this socket's accept queue (TCP_INFO tcpi_unacked of the listening socket).",
			[]string{"socket"}, cl),
		queueMax: prometheus.NewDesc(p+"accept_queue_max",
			"The most this socket's accept queue holds: the listen backlog as the kernel applied it, capped by net.core.somaxconn (tcpi_sacked).",
			[]string{"socket"}, cl),
		overflows: prometheus.NewDesc(p+"tcp_listen_overflows_total",
			"TcpExt ListenOverflows from /proc/net/netstat: times a connection found an accept queue full, for every socket of the network namespace, not only this listener's.",
			nil, cl),
		drops: prometheus.NewDesc(p+"tcp_listen_drops_total",
			"TcpExt ListenDrops from /proc/net/netstat: connection attempts dropped by listening sockets for any reason, overflows included, for the whole network namespace.",
			nil, cl),
		readNetstat: readNetstat,
	}
	for _, s := range l.socks {
		if _, err := acceptQueue(s); err == nil {
			kc.withQueues = true
		}
	}
	if _, err := kc.readNetstat(); err == nil && kc.withQueues {
		kc.withCounters = true
	}
	if !kc.withQueues && !kc.withCounters {
		return nil
	}
	return kc
}

func (kc *kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	if kc.withQueues {
		ch <- kc.queueLen
		ch <- kc.queueMax
	}
	if kc.withCounters {
		ch <- kc.overflows
		ch <- kc.drops
	}
}

// Collect leaves out what it cannot read rather than report a zero that
// would look like an empty queue.
func (kc *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	if kc.withQueues {
		for _, s := range kc.l.socks {
			q, err := acceptQueue(s)
			if err != nil {
				continue
			}
			i := strconv.Itoa(s.index)
			ch <- prometheus.MustNewConstMetric(kc.queueLen, prometheus.GaugeValue, float64(q.Len), i)
			ch <- prometheus.MustNewConstMetric(kc.queueMax, prometheus.GaugeValue, float64(q.Max), i)
		}
	}
	if kc.withCounters {
		if v, err := kc.readNetstat(); err == nil {
			if n, ok := v["ListenOverflows"]; ok {
				ch <- prometheus.MustNewConstMetric(kc.overflows, prometheus.CounterValue, float64(n))
			}
			if n, ok := v["ListenDrops"]; ok {
				ch <- prometheus.MustNewConstMetric(kc.drops, prometheus.CounterValue, float64(n))
			}
		}
	}
}
