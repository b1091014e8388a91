package mercure

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Reasons a new subscription is shed, as Config.Shed and the metrics give
// them.
const (
	ShedOverload    = "overload"    // the hub is past what it serves well
	ShedConnections = "connections" // the node is near its connection limit
	ShedSubject     = "subject"     // the token's sub has its most streams open
	ShedSubscribers = "subscribers" // the node holds its most subscriptions
)

// Shed subscriptions are told to come back after a delay drawn uniformly
// from [shedRetryMin, shedRetryMax] milliseconds: long enough for an
// overload to pass, spread wide enough that they do not return as one
// wave and bring it back.
const (
	shedRetryMin = 5_000
	shedRetryMax = 30_000
)

// limits holds the handler's admission state: the open streams per token
// subject and the publish rate per publisher.
type limits struct {
	perSubject int
	subjMu     sync.Mutex
	subjects   map[string]int // open streams per sub, only while > 0

	pub *keyedRate // nil: publishes are not limited

	shed    *prometheus.CounterVec
	limited prometheus.Counter
}

func (l *limits) init(cfg *Config) error {
	l.perSubject = cfg.MaxStreamsPerSubject
	l.subjects = make(map[string]int)
	if cfg.PublishRate > 0 {
		burst := cfg.PublishBurst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(cfg.PublishRate)))
		}
		l.pub = newKeyedRate(rate.Limit(cfg.PublishRate), burst)
	}
	l.shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_subscriptions_shed_total",
		Help: "New subscriptions sent away with a retry hint, by reason: overload, connections, subscribers, subject.",
	}, []string{"reason"})
	for _, r := range []string{ShedOverload, ShedConnections, ShedSubject, ShedSubscribers} {
		l.shed.WithLabelValues(r)
	}
	l.limited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_publishes_rate_limited_total",
		Help: "Publishes refused with 429 because their publisher went over --publish-rate.",
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{l.shed, l.limited} {
			if err := cfg.Registerer.Register(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// enterSubject counts one more stream for sub, unless sub already has
// the most the configuration allows; release undoes it. A token without
// sub is not counted.
func (l *limits) enterSubject(sub string) (release func(), ok bool) {
	if l.perSubject <= 0 || sub == "" {
		return func() {}, true
	}
	l.subjMu.Lock()
	defer l.subjMu.Unlock()
	if l.subjects[sub] >= l.perSubject {
		return nil, false
	}
	l.subjects[sub]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.subjMu.Lock()
			defer l.subjMu.Unlock()
			if l.subjects[sub]--; l.subjects[sub] <= 0 {
				delete(l.subjects, sub)
			}
		})
	}, true
}

// keyedRate is a token bucket per key. Buckets that have refilled are
// swept once the map has doubled since the last sweep, so the map holds
// about the publishers active within the time a bucket takes to refill.
type keyedRate struct {
	every   rate.Limit
	burst   int
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	sweepAt int
}

func newKeyedRate(r rate.Limit, burst int) *keyedRate {
	return &keyedRate{every: r, burst: burst, buckets: make(map[string]*rate.Limiter), sweepAt: 1024}
}

// allow takes a token from key's bucket at now, or says how long until
// one is there.
func (k *keyedRate) allow(key string, now time.Time) (ok bool, retry time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	lim := k.buckets[key]
	if lim == nil {
		if len(k.buckets) >= k.sweepAt {
			k.sweep(now)
		}
		lim = rate.NewLimiter(k.every, k.burst)
		k.buckets[key] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (k *keyedRate) sweep(now time.Time) {
	for key, lim := range k.buckets {
		if lim.TokensAt(now) >= float64(k.burst) {
			delete(k.buckets, key)
		}
	}
	k.sweepAt = max(1024, 2*len(k.buckets))
}

// publisherKey names whose bucket a publish takes from: its token's sub,
// else the client's address.
func (h *Handler) publisherKey(g *Grant, r *http.Request) string {
	if g != nil && g.Subject != "" {
		return "sub:" + g.Subject
	}
	return "addr:" + h.clientAddr(r).String()
}

// clientAddr is the address of the client that sent r: the connection's
// peer, or, when that peer is a trusted proxy, the last address in
// X-Forwarded-For that is not one.
func (h *Handler) clientAddr(r *http.Request) netip.Addr {
	peer := remoteAddr(r)
	if !h.trusted(peer) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return peer // a hop we cannot read: trust nothing before it
			}
			a = a.Unmap()
			if !h.trusted(a) {
				return a
			}
			peer = a
		}
	}
	return peer
}

func (h *Handler) trusted(a netip.Addr) bool {
	for _, p := range h.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// remoteAddr is r's peer address; the zero Addr when net/http gave none
// that parses (a test's request, a listener that is not TCP).
func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// tooManyRequests answers a publish over its rate: 429, and when to try
// again, in whole seconds rounded up.
func tooManyRequests(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(retry.Seconds())))))
	plainError(w, http.StatusTooManyRequests, "publish rate over the limit for this publisher; retry after the time in Retry-After")
}
