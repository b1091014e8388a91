package hub

import (
	"math"
	"runtime/metrics"
)

// schedWait reads how long this process's runnable goroutines waited for a
// CPU, from the runtime's own histogram: the time from being made runnable
// to running. It grows when the process has more work than its processors,
// and when other processes on the machine hold the cores its threads need.
type schedWait struct {
	s    []metrics.Sample
	prev []uint64 // counts at the last read
}

// waits is what schedWait read over one span: the median and the 90th
// percentile of the waits, in seconds (the upper bound of the bucket each
// falls in), and how many waits the runtime sampled.
type waits struct {
	median, p90 float64
	n           uint64
}

// read returns the waits since the last call. It reports none on the
// first call, or when the runtime offers no such histogram.
func (w *schedWait) read() waits {
	if w.s == nil {
		w.s = []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	}
	metrics.Read(w.s)
	if w.s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return waits{}
	}
	h := w.s[0].Value.Float64Histogram()
	if len(w.prev) != len(h.Counts) {
		w.prev = append(w.prev[:0], h.Counts...)
		return waits{}
	}
	var out waits
	for i, c := range h.Counts {
		out.n += c - w.prev[i]
	}
	// bound is the upper bound of bucket i; the last may be +Inf.
	bound := func(i int) float64 {
		if b := h.Buckets[i+1]; !math.IsInf(b, 1) {
			return b
		}
		return h.Buckets[i]
	}
	var acc uint64
	for i, c := range h.Counts {
		acc += c - w.prev[i]
		if out.median == 0 && acc > out.n/2 {
			out.median = bound(i)
		}
		if acc > out.n*9/10 {
			out.p90 = bound(i)
			break
		}
	}
	copy(w.prev, h.Counts)
	return out
}
