package listener

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

// emfileChildEnv marks the child process of the EMFILE test (see
// emfileChild), which runs with a lowered descriptor limit.
const emfileChildEnv = "LISTENER_TEST_EMFILE_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(emfileChildEnv) != "" {
		os.Exit(emfileChild())
	}
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait on the kernel or on another goroutine; it is
// never a measurement.
const waitFor = 10 * time.Second

// server is a Listener with a goroutine accepting from it, as a real
// server would, so refusals happen without the test calling Accept.
type server struct {
	l     *Listener
	reg   *prometheus.Registry
	conns chan net.Conn
	done  chan struct{}
}

func listen(t *testing.T, cfg Config) *Listener {
	t.Helper()
	return listenAt(t, "127.0.0.1:0", cfg)
}

func listenAt(t *testing.T, addr string, cfg Config) *Listener {
	t.Helper()
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	l, err := Listen(t.Context(), "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func serve(t *testing.T, cfg Config) *server {
	t.Helper()
	return serveAt(t, "127.0.0.1:0", cfg)
}

func serveAt(t *testing.T, addr string, cfg Config) *server {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s := &server{l: listenAt(t, addr, cfg), reg: reg, conns: make(chan net.Conn, 1024), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.conns)
		for {
			c, err := s.l.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	t.Cleanup(func() {
		_ = s.l.Close()
		<-s.done
		for c := range s.conns {
			_ = c.Close()
		}
	})
	return s
}

// accepted waits for the server's next connection.
func (s *server) accepted(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(waitFor):
		t.Fatal("no connection accepted")
		return nil
	}
}

// dial connects from the loopback address from (all of 127/8 is
// loopback, so 127.0.0.2 is a second client address).
func dial(t *testing.T, addr net.Addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: waitFor}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.DialContext(t.Context(), "tcp", addr.String())
	if errors.Is(err, syscall.ECONNRESET) {
		// The listener refused it before the dial had seen its handshake
		// complete.
		return resetConn{err}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// resetConn is a connection reset during its dial.
type resetConn struct{ err error }

func (r resetConn) Read([]byte) (int, error)       { return 0, r.err }
func (r resetConn) Write([]byte) (int, error)      { return 0, r.err }
func (resetConn) Close() error                     { return nil }
func (resetConn) LocalAddr() net.Addr              { return pipeAddr{} }
func (resetConn) RemoteAddr() net.Addr             { return pipeAddr{} }
func (resetConn) SetDeadline(time.Time) error      { return nil }
func (resetConn) SetReadDeadline(time.Time) error  { return nil }
func (resetConn) SetWriteDeadline(time.Time) error { return nil }

// refused reports whether the server ended c: a reset or EOF arrives. A
// connection that is queued or accepted reads nothing, and ends in the
// deadline, which makes it "not refused".
func refused(c net.Conn) (bool, error) {
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	var b [64]byte
	_, err := c.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, err
	}
	return err != nil, err
}

func mustRefused(t *testing.T, c net.Conn) {
	t.Helper()
	if ok, err := refused(c); !ok {
		t.Fatalf("connection not refused: %v", err)
	}
}

// metric returns the value of the series name{labels} in reg, and whether
// it exists.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			}
		}
	}
	return 0, false
}

func mustMetric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, ok := metric(t, reg, name, labels...)
	if !ok {
		t.Fatalf("no metric %s%v", name, labels)
	}
	return v
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == k && lp.GetValue() == v {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fakeListener is a net.Listener fed by the test, for synctest bubbles
// where real sockets cannot run: Accept returns the queued connections and
// errors in order.
type fakeListener struct {
	q      chan any // net.Conn or error
	once   sync.Once
	closed chan struct{}
	mu     sync.Mutex
	calls  []time.Time
}

func newFake() *fakeListener {
	return &fakeListener{q: make(chan any, 1024), closed: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	f.calls = append(f.calls, time.Now())
	f.mu.Unlock()
	select {
	case v := <-f.q:
		if err, ok := v.(error); ok {
			return nil, err
		}
		return v.(net.Conn), nil
	case <-f.closed:
		return nil, &net.OpError{Op: "accept", Net: "pipe", Err: net.ErrClosed}
	}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return pipeAddr{} }

func (f *fakeListener) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

// pipe queues the server end of a new pipe and returns the client end.
func (f *fakeListener) pipe() net.Conn {
	srv, cli := net.Pipe()
	f.q <- srv
	return cli
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
