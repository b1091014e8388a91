package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-hub/herald/internal/testcert"
)

func TestMaxConnectionsFlag(t *testing.T) {
	for _, c := range []struct {
		in   string
		fds  uint64
		want int
	}{
		{"auto", 20_000, 18_000},
		{"auto", 1024, 922},
		{"auto", 100, 36},
		{"auto", 64, 0}, // nothing left beside the reserve: no limit
		{"auto", 0, 0},  // limit unknown
		{"0", 20_000, 0},
		{"15000", 20_000, 15_000},
		{"15000", 0, 15_000},
	} {
		got, err := parseMaxConnections(c.in, c.fds)
		if err != nil || got != c.want {
			t.Errorf("parseMaxConnections(%q, %d) = %d, %v; want %d", c.in, c.fds, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "-1", "many", "20000", "30000"} {
		if _, err := parseMaxConnections(bad, 20_000); err == nil {
			t.Errorf("--max-connections %q accepted with an open-files limit of 20000", bad)
		}
	}
	for in, want := range map[int]int{0: 0, 1: 1, 10: 9, 15_000: 13_500} {
		if got := shedConnectionsAt(in); got != want {
			t.Errorf("shedConnectionsAt(%d) = %d, want %d", in, got, want)
		}
	}
}

// rawConn dials the hub from the source address src (127.0.0.x).
func rawConn(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// subscribeOn sends a subscribe request on c and reads the response head
// and, for a stream that ends at once, its body.
func subscribeOn(t *testing.T, c net.Conn, addr string) (status int, body string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /.well-known/mercure?topic=limits HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	_ = c.SetDeadline(time.Time{})
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// A shed stream ends at once; a live one sends nothing yet.
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	b, _ := io.ReadAll(resp.Body)
	_ = c.SetReadDeadline(time.Time{})
	return resp.StatusCode, string(b)
}

// refused dials the hub from src and reports whether it reset the
// connection at once, without a response: the reset may even beat the
// dial's return.
func refused(t *testing.T, src, addr string) bool {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		return errors.Is(err, syscall.ECONNRESET)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}

// resetOnRequest dials the hub from src and asks it for /healthz: true
// when the hub reset the connection instead of answering.
func resetOnRequest(t *testing.T, src, addr string) bool {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		return errors.Is(err, syscall.ECONNRESET)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	}
	b := make([]byte, 12)
	n, err := io.ReadFull(c, b)
	if err != nil && n == 0 {
		return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
	}
	return false
}

// TestConnectionLimits runs herald with small connection limits and holds
// raw connections against them: past nine tenths of --max-connections a
// subscription is shed with a retry hint, at the cap a connection is
// reset at once, --max-connections-per-ip holds per source address, and
// every refusal shows in the metrics.
func TestConnectionLimits(t *testing.T) {
	work, logs := t.TempDir(), t.TempDir()
	addr := freeAddr(t)
	startHub(t, work, logs, addr, "--engine", "memory", "--max-connections", "10", "--max-connections-per-ip", "6")
	waitOpen := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			// The scrape's own connection is open while it is answered;
			// at the cap it is reset, until a closed one is noticed.
			got, err := tryScrape("127.0.0.9", addr, "herald_listener_open_connections")
			if got--; err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("herald_listener_open_connections %v (%v), want %v", got, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitOpen(0)

	// Six streams from 127.0.0.1, its whole share; a seventh connection
	// from it is reset.
	for i := range 6 {
		if st, body := subscribeOn(t, rawConn(t, "127.0.0.1", addr), addr); st != 200 || body != "" {
			t.Fatalf("stream %d: %d %q, want an open stream", i+1, st, body)
		}
	}
	if !refused(t, "127.0.0.1", addr) {
		t.Fatal("a seventh connection from 127.0.0.1 was not reset (--max-connections-per-ip 6)")
	}
	// Three more from 127.0.0.2: nine open, the last that may stream.
	for i := range 3 {
		if st, body := subscribeOn(t, rawConn(t, "127.0.0.2", addr), addr); st != 200 || body != "" {
			t.Fatalf("stream %d from 127.0.0.2: %d %q, want an open stream", i+1, st, body)
		}
	}
	waitOpen(9)
	// The tenth connection is in, but past nine tenths: its subscription
	// is shed, with a retry hint.
	tenth := rawConn(t, "127.0.0.2", addr)
	st, body := subscribeOn(t, tenth, addr)
	if st != 200 || !strings.Contains(body, ": shed: connections") || !strings.Contains(body, "retry: ") {
		t.Fatalf("tenth subscription: %d %q, want it shed with a retry hint", st, body)
	}
	// Held open, it fills the cap: the next connection is reset.
	if !refused(t, "127.0.0.3", addr) {
		t.Fatal("an eleventh connection was not reset (--max-connections 10)")
	}
	tenth.Close()
	waitOpen(9)

	// The metrics need a connection of their own: at the cap it may be
	// reset until the server has seen the last one close, and those
	// resets count as refusals too.
	metric := func(sample string) float64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			v, err := tryScrape("127.0.0.9", addr, sample)
			if err == nil {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if n := metric(`herald_listener_refused_total{reason="limit"}`); n < 1 {
		t.Errorf(`herald_listener_refused_total{reason="limit"} = %v, want at least 1`, n)
	}
	if n := metric(`herald_listener_refused_total{reason="per_ip"}`); n != 1 {
		t.Errorf(`herald_listener_refused_total{reason="per_ip"} = %v, want 1`, n)
	}
	if n := metric(`herald_subscriptions_shed_total{reason="connections"}`); n != 1 {
		t.Errorf(`herald_subscriptions_shed_total{reason="connections"} = %v, want 1`, n)
	}
}

// TestConnectRate: past --connect-burst connections at once, more are
// reset until the rate lets them in.
func TestConnectRate(t *testing.T) {
	work, logs := t.TempDir(), t.TempDir()
	addr := freeAddr(t)
	// One connection a minute: the burst is all the test sees, after the
	// one the start-up health check used.
	startHub(t, work, logs, addr, "--engine", "memory", "--connect-rate", "0.0167", "--connect-burst", "4")
	var kept []net.Conn
	for i := range 3 {
		c := rawConn(t, "127.0.0.1", addr)
		if st, body := subscribeOn(t, c, addr); st != 200 || body != "" {
			t.Fatalf("connection %d within the burst: %d %q", i+1, st, body)
		}
		kept = append(kept, c)
	}
	if !refused(t, "127.0.0.1", addr) {
		t.Fatal("a connection past the burst was not reset (--connect-rate)")
	}
	_ = kept
}

// TestOverloadTurnsNewcomersAway: while the hub counts as overloaded
// (here: any wait for a CPU at all, --overload-cpu-wait 1ns, once updates
// flow), a new connection is reset at accept, a subscription on a
// connection already open is shed with reason overload and a retry hint,
// publishes on an open connection go on, and the subscriber already there
// gets every update.
func TestOverloadTurnsNewcomersAway(t *testing.T) {
	work, logs := t.TempDir(), t.TempDir()
	addr := freeAddr(t)
	startHub(t, work, logs, addr, "--engine", "memory", "--overload-cpu-wait", "1ns")
	hubURL := "http://" + addr + "/.well-known/mercure"
	tok := mintToken(t, work, hubURL)

	existing := rawConn(t, "127.0.0.1", addr)
	if st, body := subscribeOn(t, existing, addr); st != 200 || body != "" {
		t.Fatalf("first subscription: %d %q", st, body)
	}
	waiting := rawConn(t, "127.0.0.2", addr) // open, its request not sent yet
	// Eight publisher connections, opened now and kept alive.
	tr := &http.Transport{MaxConnsPerHost: 8, MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	published := 0
	publish := func(id string) {
		t.Helper()
		form := url.Values{"topic": {"limits"}, "data": {"x"}}
		if id != "" {
			form = url.Values{"topic": {"limits"}, "id": {id}}
		}
		if st, body, err := postForm(t.Context(), client, hubURL, tok, form); err != nil || st != http.StatusOK {
			t.Fatalf("publish on the open connection: %d %s %v", st, body, err)
		}
		if id == "" {
			published++
		}
	}
	burst := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range n {
					if !publishOne(t, client, hubURL, tok) {
						return
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		published += 8 * n
	}
	burst(1) // opens the eight connections before the hub is busy
	deadline := time.Now().Add(8 * time.Second)
	for {
		burst(25)
		if resetOnRequest(t, "127.0.0.3", addr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new connection reset for overload after %d publishes", published)
		}
	}
	publish("") // the hold keeps it overloaded for two seconds
	st, body := subscribeOn(t, waiting, addr)
	if st != 200 || !strings.Contains(body, ": shed: overload") || !strings.Contains(body, "retry: ") {
		t.Fatalf("subscription on an open connection while overloaded: %d %q, want it shed", st, body)
	}
	// The first subscriber got every update: count them up to a sentinel
	// published last.
	const sentinel = "sentinel-after-overload"
	publish(sentinel)
	_ = existing.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(existing)
	got := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("existing subscriber after %d of %d updates: %v", got, published, err)
		}
		if strings.HasPrefix(line, "data: x") {
			got++
		}
		if strings.Contains(line, sentinel) {
			break
		}
	}
	if got != published {
		t.Errorf("existing subscriber got %d updates before the sentinel, want all %d", got, published)
	}
	// Counted: the metrics' own connection is let in once the hub has
	// seen no wait for a second and its two-second hold is over.
	for _, c := range []string{`herald_listener_refused_total{reason="overload"}`, `herald_subscriptions_shed_total{reason="overload"}`} {
		var n float64
		var err error
		for end := time.Now().Add(10 * time.Second); ; {
			if n, err = tryScrape("", addr, c); err == nil || time.Now().After(end) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil || n < 1 {
			t.Errorf("%s = %v (%v), want at least 1", c, n, err)
		}
	}
}

// publishOne publishes one update on the limits topic with tok, or fails
// the test (from any goroutine: it uses Errorf and reports whether it
// went through).
func publishOne(t *testing.T, client *http.Client, hubURL, tok string) bool {
	st, body, err := postForm(context.Background(), client, hubURL, tok, url.Values{"topic": {"limits"}, "data": {"x"}})
	if err != nil || st != http.StatusOK {
		t.Errorf("publish on an open connection: %d %s %v", st, body, err)
		return false
	}
	return true
}

// TestMaxSubscribersOverHTTP2: --max-subscribers counts subscriptions, not
// connections: over one HTTP/2 connection the third stream is shed with a
// retry hint, and a stream that ends gives its place back.
func TestMaxSubscribersOverHTTP2(t *testing.T) {
	work, logs := t.TempDir(), t.TempDir()
	addr, admin := freeAddr(t), freeAddr(t)
	cert, key := testcert.Write(t)
	h := startHub(t, work, logs, addr, "--engine", "memory", "--tls-cert", cert, "--tls-key", key, "--max-subscribers", "2", "--admin-addr", admin)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true} //nolint:gosec // the test's own certificate
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	open := func() (*http.Response, context.CancelFunc) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.hubURL()+"?topic=a", nil)
		resp, err := client.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over HTTP/%d, want 2", resp.ProtoMajor)
		}
		return resp, cancel
	}
	r1, cancel1 := open()
	defer r1.Body.Close()
	r2, cancel2 := open()
	defer cancel2()
	defer r2.Body.Close()
	r3, cancel3 := open()
	body, _ := io.ReadAll(r3.Body) // a shed stream ends at once
	cancel3()
	if r3.StatusCode != http.StatusOK || !strings.Contains(string(body), ": shed: subscribers") || !strings.Contains(string(body), "retry: ") {
		t.Fatalf("third subscription: %d %q, want it shed", r3.StatusCode, body)
	}
	// The first ends; the hub notices on its next write (a publish) or
	// its liveness check, and then admits another.
	cancel1()
	tok := mintToken(t, work, h.hubURL())
	publish := func(id string) {
		t.Helper()
		if st, b, err := postForm(t.Context(), client, h.hubURL(), tok, url.Values{"topic": {"a"}, "id": {id}}); err != nil || st != http.StatusOK {
			t.Fatalf("publish: %d %s %v", st, b, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; scrapeMetric(t, admin, "herald_subscribers") != 1; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the ended stream never gave its place back")
		}
		publish("nudge-" + strconv.Itoa(i))
		time.Sleep(20 * time.Millisecond)
	}
	r4, cancel4 := open()
	defer cancel4()
	defer r4.Body.Close()
	publish("after")
	first := make([]byte, 256)
	n, err := io.ReadAtLeast(r4.Body, first, 1)
	if err != nil || !strings.Contains(string(first[:n]), "id: after") {
		t.Fatalf("the subscription after a place came free read %q (%v), want the update", first[:n], err)
	}
}
