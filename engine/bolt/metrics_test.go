package bolt

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/engine/enginetest"
)

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// gauge returns the value of the gauge or counter name on reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestMetricsRegistry: a second engine cannot take the same metrics on one
// registry while the first is open, and can once it is closed.
func TestMetricsRegistry(t *testing.T) {
	reg := newRegistry()
	dir := t.TempDir()
	e, err := Open(filepath.Join(dir, "a.db"), Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Append(t.Context(), enginetest.NewUpdate("urn:metrics")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"herald_journal_tail_limit_bytes":      DefaultMaxTailBytes,
		"herald_journal_stopped":               0,
		"herald_journal_commit_failures_total": 0,
	} {
		if got := gauge(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if _, err := Open(filepath.Join(dir, "b.db"), Options{Registerer: reg}); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Fatalf("second Open on the same registry = %v, want a registration error", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := Open(filepath.Join(dir, "b.db"), Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}
