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

// median returns the median wait since the last call, in seconds (the
// upper bound of its bucket), and how many waits the runtime sampled in
// that span. It reports nothing on the first call, or when the runtime
// offers no such histogram.
func (w *schedWait) median() (sec float64, n uint64) {
	if w.s == nil {
		w.s = []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	}
	metrics.Read(w.s)
	if w.s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0, 0
	}
	h := w.s[0].Value.Float64Histogram()
	if len(w.prev) != len(h.Counts) {
		w.prev = append(w.prev[:0], h.Counts...)
		return 0, 0
	}
	for i, c := range h.Counts {
		n += c - w.prev[i]
	}
	var acc uint64
	for i, c := range h.Counts {
		acc += c - w.prev[i]
		if acc > n/2 {
			sec = h.Buckets[i+1] // Buckets has one more bound than Counts
			if math.IsInf(sec, 1) {
				sec = h.Buckets[i]
			}
			break
		}
	}
	copy(w.prev, h.Counts)
	return sec, n
}
