package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// heraldBin is the herald binary under test, built once by TestMain. The
// end-to-end tests run it as a user would, in its own process.
var heraldBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "herald tests:", err)
		os.Exit(2)
	}
	heraldBin = filepath.Join(dir, "herald")
	if err := buildHerald(heraldBin); err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "herald tests:", err)
		os.Exit(2)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

// buildHerald builds this package into bin. When the tests run under the
// race detector the binary is built with it too, so a data race in the hub
// during an end-to-end run shows up in its log (and fails the test).
func buildHerald(bin string) error {
	args := []string{"build", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// heraldEnv is the environment of the processes under test, without the
// HERALD_* and OTEL_* variables that would configure the hub (and its
// traces) behind the test's back.
func heraldEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	if _, set := os.LookupEnv("GORACE"); !set {
		// A race-enabled binary sleeps 1s at exit by default; the
		// shutdown checks would measure that instead of the hub.
		env = append(env, "GORACE=atexit_sleep_ms=0")
	}
	return env
}

// hubProcess is one run of `herald serve` in its own process.
type hubProcess struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string
	name   string // for messages: "hub #2"
	stdout string // path of the captured stdout (the banner)
	stderr string // path of the captured stderr (the log)
	done   chan struct{}
	err    error // cmd.Wait's result, set before done closes
}

// startHub runs the herald binary in dir with --addr addr and the extra
// flags, and waits until it answers /healthz. The process is killed in
// t.Cleanup if it still runs; its logs are shown when the test failed.
func startHub(t *testing.T, dir, logDir, addr string, extra ...string) *hubProcess {
	t.Helper()
	return startHubEnv(t, dir, logDir, addr, nil, extra...)
}

// startHubEnv is startHub with the variables env added to heraldEnv.
func startHubEnv(t *testing.T, dir, logDir, addr string, env []string, extra ...string) *hubProcess {
	t.Helper()
	n := 1
	for {
		if _, err := os.Stat(filepath.Join(logDir, fmt.Sprintf("hub-%d.stderr", n))); errors.Is(err, os.ErrNotExist) {
			break
		}
		n++
	}
	h := &hubProcess{
		t:      t,
		addr:   addr,
		name:   fmt.Sprintf("hub #%d", n),
		stdout: filepath.Join(logDir, fmt.Sprintf("hub-%d.stdout", n)),
		stderr: filepath.Join(logDir, fmt.Sprintf("hub-%d.stderr", n)),
		done:   make(chan struct{}),
	}
	outf, err := os.Create(h.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	errf, err := os.Create(h.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()

	h.cmd = exec.Command(heraldBin, append([]string{"--addr", addr}, extra...)...)
	h.cmd.Dir = dir
	h.cmd.Env = append(heraldEnv(), env...)
	// Files, not pipes: os/exec then needs no copying goroutines, and the
	// logs survive a kill -9.
	h.cmd.Stdout, h.cmd.Stderr = outf, errf
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", h.name, err)
	}
	go func() {
		h.err = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		h.kill()
		log, _ := os.ReadFile(h.stderr)
		if strings.Contains(string(log), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", h.name, log)
		} else if t.Failed() {
			t.Logf("%s log (%s):\n%s", h.name, h.cmd.ProcessState, log)
		}
	})
	h.waitHealthy(10 * time.Second)
	return h
}

// waitHealthy polls /healthz until the hub answers 200.
func (h *hubProcess) waitHealthy(timeout time.Duration) {
	h.t.Helper()
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // the test's own certificate
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-h.done:
			log, _ := os.ReadFile(h.stderr)
			h.t.Fatalf("%s exited before it served (%v):\n%s", h.name, h.err, log)
		default:
		}
		resp, err := client.Get(h.scheme() + "://" + h.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s did not answer /healthz within %v: %v", h.name, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hubURL is the hub's public URL, the audience its tokens must name.
func (h *hubProcess) hubURL() string { return h.scheme() + "://" + h.addr + "/.well-known/mercure" }

// scheme is https when the hub was started with --tls-cert, else http.
func (h *hubProcess) scheme() string {
	if slices.Contains(h.cmd.Args, "--tls-cert") {
		return "https"
	}
	return "http"
}

// interrupt sends SIGINT, as Ctrl-C does, and returns how the process
// ended. It fails the test when the process outlives timeout.
func (h *hubProcess) interrupt(timeout time.Duration) error {
	h.t.Helper()
	start := time.Now()
	if err := h.cmd.Process.Signal(syscall.SIGINT); err != nil {
		h.t.Fatalf("SIGINT %s: %v", h.name, err)
	}
	select {
	case <-h.done:
		h.t.Logf("%s stopped %v after SIGINT", h.name, time.Since(start).Round(time.Millisecond))
		return h.err
	case <-time.After(timeout):
		h.t.Fatalf("%s still runs %v after SIGINT", h.name, timeout)
		return nil
	}
}

// kill sends SIGKILL, as a crash or the OOM killer does, and waits for
// the process to be gone. It does nothing once the process has exited.
func (h *hubProcess) kill() {
	select {
	case <-h.done:
		return
	default:
	}
	_ = h.cmd.Process.Kill()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.t.Errorf("%s (pid %d) survived SIGKILL for 10s", h.name, h.cmd.Process.Pid)
	}
}

// mintToken runs `herald token` in dir with the development key, as the
// README tells a new user to, and returns a token that may publish on
// every topic of the hub at hubURL.
func mintToken(t *testing.T, dir, hubURL string) string {
	t.Helper()
	cmd := exec.Command(heraldBin, "token", "--key", "@herald-data/dev.key", "--publish", "*", "--aud", hubURL)
	cmd.Dir = dir
	cmd.Env = heraldEnv()
	cmd.WaitDelay = time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("herald token: %v\n%s", err, stderr.String())
	}
	tok := strings.TrimSpace(string(out))
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("herald token printed %q, not a JWT", tok)
	}
	return tok
}

// exitCode describes how a process ended, for messages.
func exitCode(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return "exit status " + strconv.Itoa(ee.ExitCode())
	}
	return err.Error()
}

// scrapeMetric reads one sample from the /metrics of the hub at addr, by
// its name with labels as Prometheus writes them (e.g.
// `herald_subscriptions_shed_total{reason="subject"}`); -1 when absent.
func scrapeMetric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	return scrapeMetricFrom(t, "", addr, sample)
}

// scrapeMetricFrom is scrapeMetric from the source address src (empty:
// the system's choice), for hubs that limit connections per address.
func scrapeMetricFrom(t *testing.T, src, addr, sample string) float64 {
	t.Helper()
	v, err := tryScrape(src, addr, sample)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// tryScrape is scrapeMetricFrom that returns its error.
func tryScrape(src, addr, sample string) (float64, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	if src != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		tr.DialContext = d.DialContext
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("%s/metrics: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("%s/metrics: %w", addr, err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("%s/metrics: %q: %w", addr, line, err)
			}
			return f, nil
		}
	}
	return -1, nil
}

// postForm publishes form to hubURL with the bearer token tok and returns
// the status and body of the answer.
func postForm(ctx context.Context, client *http.Client, hubURL, tok string, form url.Values) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hubURL, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// dialFrom dials addr over TCP from the source address src (127.0.0.x).
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", addr)
}
