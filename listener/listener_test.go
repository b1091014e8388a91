package listener

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMaxConnsRefusesAtOnceAndCloseFreesASlot(t *testing.T) {
	s := serve(t, Config{MaxConns: 2})
	addr := s.l.Addr()
	dial(t, addr, "")
	s1 := s.accepted(t)
	dial(t, addr, "")
	s.accepted(t)

	// The third is accepted by the kernel, then reset by the listener:
	// its client reads an error instead of waiting in a queue.
	mustRefused(t, dial(t, addr, ""))
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "limit"); got != 1 {
		t.Fatalf("refused{limit} = %v, want 1", got)
	}
	if got := mustMetric(t, s.reg, "listener_open_connections"); got != 2 {
		t.Fatalf("open_connections = %v, want 2", got)
	}

	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	c4 := dial(t, addr, "")
	s4 := s.accepted(t)
	// The slot went to c4: the connection the server holds is c4's.
	if _, err := c4.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	_ = s4.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.ReadFull(s4, b[:]); err != nil || b[0] != 'x' {
		t.Fatalf("read from the admitted connection: %v %q", err, b)
	}
	if got := mustMetric(t, s.reg, "listener_accepted_total"); got != 3 {
		t.Fatalf("accepted_total = %v, want 3", got)
	}
	mustRefused(t, dial(t, addr, ""))
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "limit"); got != 2 {
		t.Fatalf("refused{limit} = %v, want 2", got)
	}
}

func TestConcurrentCloseCountsOnce(t *testing.T) {
	s := serve(t, Config{MaxConns: 1})
	for round := range 20 {
		dial(t, s.l.Addr(), "")
		c := s.accepted(t)
		var wg sync.WaitGroup
		var nilErrs atomic.Int32
		for range 8 {
			wg.Go(func() {
				if c.Close() == nil {
					nilErrs.Add(1)
				}
			})
		}
		wg.Wait()
		if n := nilErrs.Load(); n != 1 {
			t.Fatalf("round %d: %d Close calls succeeded, want 1", round, n)
		}
		if n := s.l.Open(); n != 0 {
			t.Fatalf("round %d: Open = %d after 8 concurrent Close, want 0", round, n)
		}
	}
	// Had a Close been counted twice the count would be negative and a
	// second connection would fit under MaxConns 1.
	dial(t, s.l.Addr(), "")
	s.accepted(t)
	mustRefused(t, dial(t, s.l.Addr(), ""))
}

// TestRateBurstOverLoopback counts refusals within one burst: with a rate
// so low that no token comes back during the test, exactly Burst
// connections get in.
func TestRateBurstOverLoopback(t *testing.T) {
	s := serve(t, Config{Rate: 0.001, Burst: 3})
	for range 3 {
		dial(t, s.l.Addr(), "")
		s.accepted(t)
	}
	for range 2 {
		mustRefused(t, dial(t, s.l.Addr(), ""))
	}
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "rate"); got != 2 {
		t.Fatalf("refused{rate} = %v, want 2", got)
	}
	if got := mustMetric(t, s.reg, "listener_accepted_total"); got != 3 {
		t.Fatalf("accepted_total = %v, want 3", got)
	}
}

// TestOverloadedRefuses: while Config.Overloaded says so, new connections
// are refused (reason overload) without taking a rate token; once it
// says no more, they are admitted again.
func TestOverloadedRefuses(t *testing.T) {
	var over atomic.Bool
	s := serve(t, Config{Rate: 0.001, Burst: 2, Overloaded: over.Load})
	dial(t, s.l.Addr(), "")
	s.accepted(t)
	over.Store(true)
	for range 3 {
		mustRefused(t, dial(t, s.l.Addr(), ""))
	}
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "overload"); got != 3 {
		t.Fatalf("refused{overload} = %v, want 3", got)
	}
	over.Store(false)
	// The burst's second token is still there: the refused ones took none.
	dial(t, s.l.Addr(), "")
	s.accepted(t)
	mustRefused(t, dial(t, s.l.Addr(), ""))
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "rate"); got != 1 {
		t.Fatalf("refused{rate} = %v, want 1", got)
	}
}

func TestRefuseHTTPWritesA503(t *testing.T) {
	s := serve(t, Config{MaxConns: 1, Refuse: RefuseHTTP(1500 * time.Millisecond)})
	dial(t, s.l.Addr(), "")
	s.accepted(t)
	c := dial(t, s.l.Addr(), "")
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	// The client sends nothing, so the listener's close is a plain FIN
	// after the reply: the read ends with EOF, not a reset.
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read the refusal: %v (got %q)", err, got)
	}
	resp := string(got)
	for _, want := range []string{"HTTP/1.1 503 Service Unavailable\r\n", "Retry-After: 2\r\n", "Connection: close\r\n", "\r\n\r\nservice unavailable: limit\n"} {
		if !strings.Contains(resp, want) {
			t.Fatalf("refusal %q lacks %q", resp, want)
		}
	}
	if !strings.HasPrefix(resp, "HTTP/1.1 503") {
		t.Fatalf("refusal %q does not start with the status line", resp)
	}
}

func TestCloseEndsAccept(t *testing.T) {
	for _, sockets := range []int{1, 2} {
		t.Run("sockets="+strconv.Itoa(sockets), func(t *testing.T) {
			l := listen(t, Config{ReusePort: sockets})
			errc := make(chan error, 1)
			go func() {
				_, err := l.Accept()
				errc <- err
			}()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(waitFor):
				t.Fatal("Accept still blocked after Close")
			}
			if err := l.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept on a closed listener: %v", err)
			}
		})
	}
}

// TestCloseReleasesHeldConnections: a connection an accept goroutine holds
// for an Accept that never comes is closed by Close, and its slot freed.
func TestCloseReleasesHeldConnections(t *testing.T) {
	l := listen(t, Config{ReusePort: 2})
	c := dial(t, l.Addr(), "")
	eventually(t, "an accept goroutine to take the connection", func() bool { return l.Open() == 1 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := l.Open(); n != 0 {
		t.Fatalf("Open = %d after Close, want 0", n)
	}
	mustRefused(t, c)
}

func TestConnKeepsTheAcceptedConnsAbilities(t *testing.T) {
	s := serve(t, Config{})
	dial(t, s.l.Addr(), "")
	c := s.accepted(t)
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Error("no io.ReaderFrom: net/http would lose sendfile")
	}
	if _, ok := c.(io.WriterTo); !ok {
		t.Error("no io.WriterTo")
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatal("no syscall.Conn")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := raw.Control(func(f uintptr) { fd = f }); err != nil || fd == 0 {
		t.Fatalf("descriptor %d: %v", fd, err)
	}
	if _, ok := c.(interface{ NetConn() net.Conn }).NetConn().(*net.TCPConn); !ok {
		t.Error("NetConn is not the *net.TCPConn")
	}
}

func TestMetricsLabelsAndUnregisterOnClose(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := Listen(t.Context(), "tcp", "127.0.0.1:0", Config{Registerer: reg, MetricsLabels: prometheus.Labels{"listener": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Listen(t.Context(), "tcp", "127.0.0.1:0", Config{Registerer: reg, MetricsLabels: prometheus.Labels{"listener": "b"}, MetricsPrefix: "edge_"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The same prefix and labels again is refused while a is open.
	if _, err := Listen(t.Context(), "tcp", "127.0.0.1:0", Config{Registerer: reg, MetricsLabels: prometheus.Labels{"listener": "a"}}); err == nil {
		t.Fatal("a second listener registered the same metrics")
	}
	mustMetric(t, reg, "listener_accepted_total", "listener", "a")
	mustMetric(t, reg, "edge_accepted_total", "listener", "b")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := metric(t, reg, "listener_accepted_total", "listener", "a"); ok {
		t.Fatal("metrics of a closed listener still registered")
	}
	a2, err := Listen(t.Context(), "tcp", "127.0.0.1:0", Config{Registerer: reg, MetricsLabels: prometheus.Labels{"listener": "a"}})
	if err != nil {
		t.Fatalf("relisten after Close: %v", err)
	}
	_ = a2.Close()
}

func TestConfigErrors(t *testing.T) {
	if _, err := Listen(t.Context(), "tcp", "127.0.0.1:0", Config{MaxConns: -1}); err == nil {
		t.Error("negative MaxConns accepted")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Wrap(ln, Config{ReusePort: 2}); err == nil {
		t.Error("Wrap accepted ReusePort 2")
	}
}

func TestParseNetstat(t *testing.T) {
	in := "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n" +
		"TcpExt: 3 17 21\n" +
		"IpExt: InNoRoutes\nIpExt: 0\n" +
		"MPTcpExt: ListenOverflows\nMPTcpExt: 99\n"
	got, err := parseNetstat([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if got["ListenOverflows"] != 17 || got["ListenDrops"] != 21 || got["SyncookiesSent"] != 3 {
		t.Fatalf("parsed %v", got)
	}
	for _, bad := range []string{
		"TcpExt: A B\nTcpExt: 1\n",
		"TcpExt: A\nTcpExt: x\n",
		"IpExt: A\nIpExt: 1\n",
		"",
	} {
		if _, err := parseNetstat([]byte(bad)); err == nil {
			t.Errorf("parseNetstat(%q) did not fail", bad)
		}
	}
}
