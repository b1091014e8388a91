package bench

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Counters are the cumulative figures a Monitor samples every second.
type Counters struct {
	Open, Delivered, Published int64
	// P99 is the latency of the last second's deliveries, when known.
	P99 time.Duration
}

// Monitor samples a run every second: it keeps the timeline for the
// report and, on a terminal, rewrites one progress line.
type Monitor struct {
	label    string
	progress io.Writer
	src      func() Counters
	start    time.Time

	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	phase   string
	samples []Sample
	shown   bool
}

// StartMonitor starts sampling src; Stop ends it.
func (e *Env) StartMonitor(label string, src func() Counters) *Monitor {
	m := &Monitor{
		label: label, progress: e.Cfg.Progress, src: src, start: time.Now(),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go m.loop() // ends at Stop, which waits for it
	return m
}

// SetPhase names what the run is doing, for the progress line.
func (m *Monitor) SetPhase(p string) {
	m.mu.Lock()
	m.phase = p
	m.mu.Unlock()
}

func (m *Monitor) loop() {
	defer close(m.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	prev, prevT := m.src(), time.Now()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			c := m.src()
			dt := now.Sub(prevT).Seconds()
			s := Sample{
				T:              now.Sub(m.start).Seconds(),
				Open:           c.Open,
				DeliveriesPerS: float64(c.Delivered-prev.Delivered) / dt,
				PublishesPerS:  float64(c.Published-prev.Published) / dt,
				P99Ms:          float64(c.P99) / float64(time.Millisecond),
			}
			prev, prevT = c, now
			m.mu.Lock()
			m.samples = append(m.samples, s)
			phase := m.phase
			m.mu.Unlock()
			if m.progress != nil {
				fmt.Fprintf(m.progress, "\r\033[K%s %-10s %4.0fs  open %d  deliveries/s %.0f  publishes/s %.0f  p99 %.1f ms",
					m.label, phase, s.T, s.Open, s.DeliveriesPerS, s.PublishesPerS, s.P99Ms)
				m.shown = true
			}
		}
	}
}

// Stop ends sampling, clears the progress line and returns the timeline.
func (m *Monitor) Stop() []Sample {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
	if m.shown {
		fmt.Fprint(m.progress, "\r\033[K")
		m.shown = false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.samples
}
