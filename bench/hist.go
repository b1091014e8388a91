package bench

import (
	"math"
	"runtime"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 5 minutes, to three
// significant figures (a 0.1% error at every magnitude).
const (
	histMaxUs = int64(5 * time.Minute / time.Microsecond)
	histSig   = 3
)

func newHist() *hdr.Histogram { return hdr.New(1, histMaxUs, histSig) }

// clampUs converts d to whole microseconds within the histogram's range.
func clampUs(d time.Duration) int64 {
	us := int64(d / time.Microsecond)
	return min(max(us, 1), histMaxUs)
}

// recorder is a latency histogram many goroutines record into: it is
// sharded, each shard behind its own lock, since one histogram is some
// 160 KB and one per subscriber would not fit 20,000 subscribers. Each
// shard also keeps the current interval, which rotate folds into the
// latest per-second P99.
type recorder struct {
	shards []recShard
}

type recShard struct {
	mu              sync.Mutex
	total, interval *hdr.Histogram
	_               [40]byte // keep neighbouring locks off one cache line
}

func newRecorder() *recorder {
	n := max(4, 4*runtime.GOMAXPROCS(0))
	r := &recorder{shards: make([]recShard, n)}
	for i := range r.shards {
		r.shards[i].total = newHist()
		r.shards[i].interval = newHist()
	}
	return r
}

// record adds one latency; shard is any number that spreads callers.
func (r *recorder) record(shard int, d time.Duration) {
	s := &r.shards[uint(shard)%uint(len(r.shards))]
	us := clampUs(d)
	s.mu.Lock()
	_ = s.total.RecordValue(us)
	_ = s.interval.RecordValue(us)
	s.mu.Unlock()
}

// rotate returns the P99 of what was recorded since the last rotate, in
// microseconds (0 when nothing was), and starts a new interval.
func (r *recorder) rotate(scratch *hdr.Histogram) int64 {
	scratch.Reset()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		scratch.Merge(s.interval)
		s.interval.Reset()
		s.mu.Unlock()
	}
	return scratch.ValueAtPercentile(99)
}

// merged returns everything recorded, as one histogram.
func (r *recorder) merged() *hdr.Histogram {
	h := newHist()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		h.Merge(s.total)
		s.mu.Unlock()
	}
	return h
}

func usToMs(us int64) float64 { return float64(us) / 1000 }

// percentiles summarizes h (in µs) in milliseconds.
func percentiles(h *hdr.Histogram) Percentiles {
	if h == nil || h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		P50:  usToMs(h.ValueAtPercentile(50)),
		P90:  usToMs(h.ValueAtPercentile(90)),
		P99:  usToMs(h.ValueAtPercentile(99)),
		P999: usToMs(h.ValueAtPercentile(99.9)),
		Max:  usToMs(h.Max()),
	}
}

// distribution samples h at percentiles that halve the remaining tail at
// every second step (0, 29.3, 50, 64.6, 75, … %), as HdrHistogram's
// percentile plots do, up to the last recorded value.
func distribution(h *hdr.Histogram) []Quantile {
	n := h.TotalCount()
	if n == 0 {
		return nil
	}
	var out []Quantile
	for k := 0; ; k++ {
		p := 100 * (1 - math.Pow(2, -float64(k)/2))
		if p >= 100 || 1-p/100 < 1/float64(n) {
			break
		}
		out = append(out, Quantile{Percentile: p, Ms: usToMs(h.ValueAtPercentile(p))})
	}
	return append(out, Quantile{Percentile: 100, Ms: usToMs(h.Max())})
}

// encodeHist and decodeHist carry a histogram between processes in the
// HdrHistogram V2 compressed encoding (base64 text).
func encodeHist(h *hdr.Histogram) (string, error) {
	b, err := h.Encode(hdr.V2CompressedEncodingCookieBase)
	return string(b), err
}

func decodeHist(s string) (*hdr.Histogram, error) {
	if s == "" {
		return newHist(), nil
	}
	return hdr.Decode([]byte(s))
}
