package bolt

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// register puts the engine's metrics on reg. They read the engine's state
// when scraped, so appends pay nothing for them; Close takes them off, so
// an engine reopened in the same process registers again.
func (e *Engine) register(reg prometheus.Registerer) error {
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_journal_tail_bytes",
			Help: "Bytes of journaled updates not yet in the history file, which the engine holds in memory.",
		}, func() float64 {
			e.mu.RLock()
			defer e.mu.RUnlock()
			return float64(e.tail.bytes)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_journal_tail_limit_bytes",
			Help: "Bytes of the tail at which appends wait for the history file (Options.MaxTailBytes).",
		}, func() float64 { return float64(e.maxTail) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_journal_commit_failures_total",
			Help: "Journal commits that failed; their appends were refused.",
		}, func() float64 { return float64(e.commitFailures.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_journal_stopped",
			Help: "1 when the history takes no more appends after a journal write failure it could not undo; restart herald.",
		}, func() float64 {
			if e.stopped.Load() != nil {
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
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	e.reg, e.collectors = reg, cs
	return nil
}

// unregister takes the engine's metrics off the registry, at Close.
func (e *Engine) unregister() {
	for _, c := range e.collectors {
		e.reg.Unregister(c)
	}
}
