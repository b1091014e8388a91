package bench

// Sampling a server process for the idle and churn scenarios.
//
// The /metrics text is parsed with github.com/prometheus/common/expfmt, the
// parser Prometheus itself uses; it was already in the module graph (through
// client_golang), so reading the three gauges costs no new dependency and
// no hand-written parser.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ServerStats is one sample of a server process.
type ServerStats struct {
	RSSBytes    uint64  // resident set size (VmRSS); 0 when no pid was given
	CPUSeconds  float64 // user + system CPU time consumed so far
	Threads     int     // OS threads
	OpenFDs     int     // open file descriptors (sockets included)
	Goroutines  int     // go_goroutines from /metrics; -1 if unknown
	HeapBytes   uint64  // go_memstats_heap_inuse_bytes from /metrics; 0 if unknown
	Connections int     // herald_connections from /metrics; -1 if unknown
	WriteDelay  float64 // herald_write_delay_seconds from /metrics; -1 if unknown
}

// procClockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
// It is 100 on every Linux architecture Go supports (the kernel fixes the
// user-visible value whatever its internal HZ), and Go cannot ask
// sysconf(_SC_CLK_TCK) without cgo.
const procClockTicks = 100

// procMetricsTimeout bounds a /metrics fetch when ctx has no deadline.
const procMetricsTimeout = 5 * time.Second

// procMetricsMaxBytes bounds the /metrics body read.
const procMetricsMaxBytes = 16 << 20

// SampleServer samples process pid from /proc (Linux only) and, when
// metricsURL is not empty, the Prometheus text exposition served there.
//
// pid 0 skips /proc and reads only metricsURL (RSSBytes, CPUSeconds,
// Threads and OpenFDs are then 0). Reading another process's fd directory
// needs the same user (or CAP_SYS_PTRACE).
//
// If /proc can be read but /metrics cannot, SampleServer returns the /proc
// part of the sample together with the error; metrics that the page does not
// carry are not an error, they stay unknown (-1, or 0 for HeapBytes).
func SampleServer(ctx context.Context, pid int, metricsURL string) (ServerStats, error) {
	st := ServerStats{Goroutines: -1, Connections: -1, WriteDelay: -1}
	if pid < 0 || (pid == 0 && metricsURL == "") {
		return st, fmt.Errorf("sample server: bad pid %d", pid)
	}
	if pid > 0 {
		if err := procSample(pid, &st); err != nil {
			return st, fmt.Errorf("sample server pid %d: %w", pid, err)
		}
	}
	if metricsURL != "" {
		if err := procSampleMetrics(ctx, metricsURL, &st); err != nil {
			return st, fmt.Errorf("sample server metrics: %w", err)
		}
	}
	return st, nil
}

// procSample fills the /proc part of st.
func procSample(pid int, st *ServerStats) error {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return err
	}
	if st.CPUSeconds, err = procParseStat(stat); err != nil {
		return err
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return err
	}
	if st.RSSBytes, st.Threads, err = procParseStatus(status); err != nil {
		return err
	}
	fds, err := os.Open(dir + "/fd")
	if err != nil {
		return err
	}
	defer fds.Close()
	names, err := fds.Readdirnames(-1)
	if err != nil {
		return err
	}
	// When pid is our own, this counts the fd reading the directory too.
	st.OpenFDs = len(names)
	return nil
}

// procParseStat returns utime+stime in seconds from the contents of
// /proc/PID/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so fields are counted from the last ')'.
func procParseStat(b []byte) (cpuSeconds float64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat: no command name")
	}
	// After ")": field 3 (state) is rest[0]; utime is field 14, stime 15.
	rest := strings.Fields(string(b[i+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(rest) <= stime {
		return 0, fmt.Errorf("malformed stat: %d fields", len(rest)+2)
	}
	u, err := strconv.ParseUint(rest[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed stat utime: %w", err)
	}
	s, err := strconv.ParseUint(rest[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed stat stime: %w", err)
	}
	return float64(u+s) / procClockTicks, nil
}

// procParseStatus returns VmRSS in bytes and Threads from the contents of
// /proc/PID/status. A zombie has no VmRSS line: its RSS is 0.
func procParseStatus(b []byte) (rss uint64, threads int, err error) {
	sawThreads := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "VmRSS":
			num, unit, _ := strings.Cut(val, " ")
			kb, err := strconv.ParseUint(num, 10, 64)
			if err != nil || strings.TrimSpace(unit) != "kB" {
				return 0, 0, fmt.Errorf("malformed status VmRSS %q", val)
			}
			rss = kb * 1024
		case "Threads":
			if threads, err = strconv.Atoi(val); err != nil {
				return 0, 0, fmt.Errorf("malformed status Threads %q", val)
			}
			sawThreads = true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !sawThreads {
		return 0, 0, errors.New("malformed status: no Threads line")
	}
	return rss, threads, nil
}

// procSampleMetrics fetches the text exposition at url and fills the
// metrics part of st.
func procSampleMetrics(ctx context.Context, url string, st *ServerStats) error {
	families, err := procFetchMetrics(ctx, http.DefaultClient, url)
	if err != nil {
		return err
	}
	procFillStats(families, st)
	return nil
}

// procFetchMetrics fetches and parses the text exposition at url.
func procFetchMetrics(ctx context.Context, c *http.Client, url string) (procFamilies, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, procMetricsTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Ask for the classic text format, not protobuf or OpenMetrics.
	req.Header.Set("Accept", string(expfmt.FmtText))
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return procParseFamilies(io.LimitReader(resp.Body, procMetricsMaxBytes))
}

// procFamilies is a parsed text exposition.
type procFamilies map[string]*dto.MetricFamily

func procParseFamilies(r io.Reader) (procFamilies, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	return families, nil
}

// value sums a gauge, counter or untyped metric over its label sets;
// ok is false when it is absent or of another type.
func (f procFamilies) value(name string) (float64, bool) {
	mf, ok := f[name]
	if !ok || len(mf.GetMetric()) == 0 {
		return 0, false
	}
	sum := 0.0
	for _, m := range mf.GetMetric() {
		switch {
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		default:
			return 0, false // a histogram or summary is not what we want
		}
	}
	return sum, true
}

// maxWatched bounds the series watched returns: label sets are the
// server's to choose, the report's length is ours.
const maxWatched = 64

// watched returns the counter, gauge and untyped series of every family
// whose name holds one of words as whole parts between underscores (the
// last part maybe plural: "overflow" is in feed_overflows_total), keyed
// by name and labels as the text format writes them, the first
// maxWatched in name order.
func (f procFamilies) watched(words []string) map[string]float64 {
	var out map[string]float64
	for _, name := range slices.Sorted(maps.Keys(f)) {
		padded := "_" + name + "_"
		if !slices.ContainsFunc(words, func(w string) bool {
			return strings.Contains(padded, "_"+w+"_") || strings.Contains(padded, "_"+w+"s_")
		}) {
			continue
		}
		for _, m := range f[name].GetMetric() {
			var v float64
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			case m.GetUntyped() != nil:
				v = m.GetUntyped().GetValue()
			default:
				continue
			}
			if len(out) >= maxWatched {
				return out
			}
			if out == nil {
				out = make(map[string]float64)
			}
			out[seriesKey(name, m)] = v
		}
	}
	return out
}

// seriesKey is a series' name and labels, name{a="x",b="y"}.
func seriesKey(name string, m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	for i, l := range m.GetLabel() {
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", l.GetName(), l.GetValue())
	}
	b.WriteByte('}')
	return b.String()
}

// procFillStats reads go_goroutines, go_memstats_heap_inuse_bytes,
// herald_connections and herald_write_delay_seconds into st; an absent one
// leaves its field as it was.
func procFillStats(f procFamilies, st *ServerStats) {
	if v, ok := f.value("go_goroutines"); ok {
		st.Goroutines = int(v)
	}
	if v, ok := f.value("go_memstats_heap_inuse_bytes"); ok && v >= 0 {
		st.HeapBytes = uint64(v)
	}
	if v, ok := f.value("herald_connections"); ok {
		st.Connections = int(v)
	}
	if v, ok := f.value("herald_write_delay_seconds"); ok && v >= 0 {
		st.WriteDelay = v
	}
}
