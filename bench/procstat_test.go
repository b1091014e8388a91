package bench

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func procServeText(t *testing.T, body string) string {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(w, body)
	}))
	t.Cleanup(ts.Close)
	return ts.URL + "/metrics"
}

func TestSampleServerSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc")
	}
	url := procServeText(t, `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2345e+06
# TYPE herald_connections gauge
herald_connections 7
# TYPE herald_write_delay_seconds gauge
herald_write_delay_seconds 0.025
# TYPE herald_other_total counter
herald_other_total 3
`)
	st, err := SampleServer(t.Context(), os.Getpid(), url)
	if err != nil {
		t.Fatal(err)
	}
	if st.RSSBytes < 1<<20 || st.RSSBytes > 1<<40 {
		t.Errorf("RSSBytes %d", st.RSSBytes)
	}
	if st.CPUSeconds < 0 {
		t.Errorf("CPUSeconds %v", st.CPUSeconds)
	}
	if st.Threads < 1 {
		t.Errorf("Threads %d", st.Threads)
	}
	if st.OpenFDs < 3 { // stdin, stdout, stderr at least
		t.Errorf("OpenFDs %d", st.OpenFDs)
	}
	if st.Goroutines != 42 || st.HeapBytes != 1234500 || st.Connections != 7 || st.WriteDelay != 0.025 {
		t.Errorf("metrics %+v", st)
	}

	// Open fds are counted: many more files show up. Many, so that the
	// sockets other tests of the package open and close meanwhile are
	// noise beside them.
	const more = 200
	var files []*os.File
	for range more {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	st2, err := SampleServer(t.Context(), os.Getpid(), "")
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if st2.OpenFDs < st.OpenFDs+more-20 || st2.OpenFDs > st.OpenFDs+more+20 {
		t.Errorf("OpenFDs %d with %d more files open, was %d", st2.OpenFDs, more, st.OpenFDs)
	}
	if st2.Goroutines != -1 || st2.HeapBytes != 0 || st2.Connections != -1 || st2.WriteDelay != -1 {
		t.Errorf("without metricsURL metrics should be unknown: %+v", st2)
	}
	if st2.CPUSeconds < st.CPUSeconds {
		t.Errorf("CPU went backwards: %v then %v", st.CPUSeconds, st2.CPUSeconds)
	}
}

// A real client_golang registry, served by promhttp with its content
// negotiation, as herald serves it.
func TestSampleServerPromhttp(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	conns := prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_connections", Help: "Open client connections."})
	reg.MustRegister(conns)
	conns.Set(3)
	ts := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer ts.Close()

	st, err := SampleServer(t.Context(), 0, ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	if st.Goroutines < 1 || st.HeapBytes == 0 || st.Connections != 3 {
		t.Errorf("metrics %+v", st)
	}
	if st.RSSBytes != 0 || st.OpenFDs != 0 {
		t.Errorf("pid 0 should skip /proc: %+v", st)
	}
}

func TestSampleServerMissingMetrics(t *testing.T) {
	url := procServeText(t, "go_goroutines 5\nsomething_else{a=\"b\"} 1\n")
	st, err := SampleServer(t.Context(), 0, url)
	if err != nil {
		t.Fatal(err)
	}
	if st.Goroutines != 5 || st.HeapBytes != 0 || st.Connections != -1 || st.WriteDelay != -1 {
		t.Errorf("got %+v", st)
	}
}

// TestSampleWriteDelay: fanout reads herald's write delay from the hub's
// /metrics, or from --metrics-url, and leaves it unknown when the hub has
// none or metrics are off.
func TestSampleWriteDelay(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "# TYPE herald_write_delay_seconds gauge\nherald_write_delay_seconds 0.0375\n")
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	hubURL := ts.URL + "/.well-known/mercure"
	if d, ok := sampleWriteDelay(t.Context(), Config{Hub: hubURL}); !ok || d != 0.0375 {
		t.Errorf("from the hub's origin: %v, %v; want 0.0375", d, ok)
	}
	if d, ok := sampleWriteDelay(t.Context(), Config{Hub: "http://127.0.0.1:1/x", MetricsURL: ts.URL + "/metrics"}); !ok || d != 0.0375 {
		t.Errorf("from --metrics-url: %v, %v; want 0.0375", d, ok)
	}
	if _, ok := sampleWriteDelay(t.Context(), Config{Hub: hubURL, MetricsURL: "off"}); ok {
		t.Error("read with metrics off")
	}
	if _, ok := sampleWriteDelay(t.Context(), Config{Hub: hubURL, MetricsURL: ts.URL + "/elsewhere"}); ok {
		t.Error("read from a page that is not there")
	}
	plain := procServeText(t, "go_goroutines 5\n")
	if _, ok := sampleWriteDelay(t.Context(), Config{Hub: hubURL, MetricsURL: plain}); ok {
		t.Error("read from metrics without the gauge")
	}
}

func TestSampleServerErrors(t *testing.T) {
	ctx := t.Context()
	if _, err := SampleServer(ctx, 0, ""); err == nil {
		t.Error("pid 0 without metrics: no error")
	}
	if _, err := SampleServer(ctx, -1, ""); err == nil {
		t.Error("negative pid: no error")
	}
	if runtime.GOOS == "linux" {
		if _, err := SampleServer(ctx, 1<<30, ""); err == nil {
			t.Error("nonexistent pid: no error")
		}
	}
	if _, err := SampleServer(ctx, 0, procServeText(t, "go_goroutines not-a-number\n")); err == nil {
		t.Error("malformed metrics: no error")
	}
	ts := httptest.NewServer(http.NotFoundHandler())
	defer ts.Close()
	if _, err := SampleServer(ctx, 0, ts.URL); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404 metrics: %v", err)
	}
	if runtime.GOOS == "linux" {
		// /proc is read even when /metrics fails.
		st, err := SampleServer(ctx, os.Getpid(), ts.URL)
		if err == nil || st.RSSBytes == 0 {
			t.Errorf("got %+v, %v; want the /proc sample and an error", st, err)
		}
	}
}

func TestProcParseStat(t *testing.T) {
	// The command name holds spaces and a ')'.
	stat := "1234 (we ird) (name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 1000000 500 18446744073709551615\n"
	cpu, err := procParseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if cpu != 3.25 {
		t.Errorf("cpu %v, want (250+75)/100", cpu)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 1 0"} {
		if _, err := procParseStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestProcParseStatus(t *testing.T) {
	status := "Name:\tx\nState:\tS (sleeping)\nVmRSS:\t   20480 kB\nThreads:\t9\n"
	rss, threads, err := procParseStatus([]byte(status))
	if err != nil || rss != 20480*1024 || threads != 9 {
		t.Errorf("got %d, %d, %v", rss, threads, err)
	}
	// A zombie has no VmRSS.
	rss, threads, err = procParseStatus([]byte("Name:\tx\nState:\tZ (zombie)\nThreads:\t1\n"))
	if err != nil || rss != 0 || threads != 1 {
		t.Errorf("zombie: got %d, %d, %v", rss, threads, err)
	}
	for _, bad := range []string{"", "VmRSS:\t12 MB\nThreads:\t1\n", "Threads:\tmany\n"} {
		if _, _, err := procParseStatus([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
