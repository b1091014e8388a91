package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Config tunes a Listener. The zero value is a listener without limits,
// with Go's keep-alive defaults, one socket and no metrics.
type Config struct {
	// MaxConns caps the connections handed out and not yet closed; 0 means
	// no cap. A connection over it is accepted and reset at once.
	MaxConns int
	// MaxConnsPerIP caps them per remote address (IPv4-mapped IPv6
	// addresses count as their IPv4 address); 0 means no cap.
	MaxConnsPerIP int
	// Rate is the sustained number of connections admitted per second, and
	// Burst how many may come at once above it (at least 1 when Rate is
	// set). 0 means no rate limit. A connection over it is refused like
	// one over MaxConns.
	Rate  rate.Limit
	Burst int

	// Overloaded, when set, is asked for every connection within
	// MaxConns and MaxConnsPerIP (before the rate, so that it takes no
	// token); while it returns true the connection is refused
	// (reason "overload"). It lets a server that knows it is short of CPU
	// or behind on its work turn new clients away at the cheapest point,
	// before they cost it a goroutine and a request. It must be fast and
	// safe for concurrent use: it runs on the accept path.
	Overloaded func() bool
	// OverloadPause, when set with Overloaded, makes an overloaded
	// listener stop listening instead of resetting each new connection
	// itself: the kernel then refuses new connections as for a closed port
	// (the client's connect fails with ECONNREFUSED within a round trip),
	// which costs the process nothing however fast they come, and the
	// connections waiting in the accept queue are reset. Every
	// OverloadPause the listener asks Overloaded again, and listens again
	// once it says false. Only on Linux, and only for sockets Listen bound
	// to a fixed port (with port 0 the kernel would give the socket a new
	// port when it listens again); elsewhere connections are reset one by
	// one. While a socket is paused no other process can bind its address.
	OverloadPause time.Duration

	// Refuse, when set, is called with each refused connection before it
	// is closed, so that a caller can say why (RefuseHTTP writes a 503).
	// It runs on the accept path under a deadline of RefuseTimeout on the
	// connection, so it must only do I/O on that connection. After it
	// returns the connection is closed with an orderly FIN rather than a
	// reset, because a reset right behind the bytes it wrote makes clients
	// lose them (see RefuseHTTP). It is not called for connections shed
	// while the process is out of file descriptors.
	Refuse func(net.Conn, Reason)
	// RefuseTimeout bounds Refuse's I/O; 0 means 100 ms.
	RefuseTimeout time.Duration

	// ReusePort is the number of sockets Listen binds to the address with
	// SO_REUSEPORT, each with its own accept goroutine, so the kernel
	// spreads new connections over several accept queues. 0 or 1 means one
	// socket. Only on Linux; elsewhere Listen binds one socket.
	ReusePort int

	// KeepAlive sets TCP keep-alive on every connection handed out. nil
	// means Go's defaults for Listen (as net.Listen: enabled, 15 s idle,
	// 15 s between probes, 9 probes) and leaves Wrap's connections as the
	// wrapped listener made them. Enable false turns probes off.
	KeepAlive *net.KeepAliveConfig

	// NoReserveFD turns off the spare file descriptor kept open to shed
	// connections while the process has run out of descriptors (EMFILE):
	// without it those connections wait in the kernel's queue until
	// descriptors are freed, and the queue overflows.
	NoReserveFD bool

	// Registerer receives the listener's metrics; nil means none. They
	// are unregistered by Close, so a new Listener can take their place.
	Registerer prometheus.Registerer
	// MetricsPrefix starts every metric name; "" means "listener_".
	MetricsPrefix string
	// MetricsLabels are constant labels on every metric, to tell several
	// listeners on one registry apart (for example {"listener": "public"}).
	MetricsLabels prometheus.Labels

	// Logger receives a warning when accepting starts failing and a note
	// when it recovers; nil means no logging.
	Logger *slog.Logger
}

// Back-off bounds while accept fails with a resource error: short enough
// that a burst of EMFILE costs little latency, long enough that a process
// out of descriptors does not burn a core on failing accept calls.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

const defaultRefuseTimeout = 100 * time.Millisecond

// goKeepAlive is what net.Listen sets on accepted connections.
var goKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}

// A Listener is a net.Listener that limits what it hands out and counts
// what it refuses. Its Accept, Addr and Close may be called from any
// goroutine.
type Listener struct {
	cfg       Config
	keepAlive *net.KeepAliveConfig
	socks     []*socket
	log       *slog.Logger
	m         *metrics
	limiter   *rate.Limiter
	spare     *spareFD

	mu    sync.Mutex
	open  int
	perIP map[netip.Addr]int

	// With more than one socket, accept goroutines hand connections over
	// here; with one, Accept accepts on the caller's goroutine.
	handoff chan net.Conn
	wg      sync.WaitGroup

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	failOnce sync.Once
	failed   chan struct{}
	failErr  error
}

// socket is one listening socket and what the accept path knows of it.
type socket struct {
	index int
	ln    net.Listener
	raw   syscall.RawConn // nil when ln has no file descriptor
	// fixedPort: ln was bound to the port asked for, not port 0, so it
	// may stop listening and listen again on the same address (pause).
	fixedPort bool
	backlog   int // what listen is given again after a pause
	// After a pause, the socket admits at most ramp connections per
	// OverloadPause, rampLeft of them until rampUntil; ramp is 0 when the
	// socket is not ramping. Only s's accept path uses them.
	ramp, rampLeft int
	rampUntil      time.Time
	calls          atomic.Int64 // accept calls, so tests can see a loop that spins
}

var _ net.Listener = (*Listener)(nil)

// Listen binds network ("tcp", "tcp4", "tcp6" or "unix") and addr and
// returns a Listener on it. ctx bounds the binding only, as with
// net.ListenConfig: the Listener lives until Close. With cfg.ReusePort > 1
// on Linux it binds that many SO_REUSEPORT sockets to the address (when
// addr asks for port 0, all of them take the port the first one got).
//
// The listen backlog is the kernel's maximum, which Go reads from
// net.core.somaxconn; AcceptQueues reports what the kernel applied.
func Listen(ctx context.Context, network, addr string, cfg Config) (*Listener, error) {
	n := 1
	if cfg.ReusePort > 1 && reusePortSupported {
		if !strings.HasPrefix(network, "tcp") {
			return nil, fmt.Errorf("listen %s: reuse port needs tcp", network)
		}
		n = cfg.ReusePort
	}
	// Keep-alive is set after admission instead (KeepAlive: -1), so a
	// refused connection costs no setsockopt calls.
	lc := net.ListenConfig{KeepAlive: -1}
	if n > 1 {
		lc.Control = controlReusePort
	}
	lns := make([]net.Listener, 0, n)
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	for i := range n {
		a := addr
		if i > 0 {
			a = lns[0].Addr().String()
		}
		ln, err := lc.Listen(ctx, network, a)
		if err != nil {
			closeAll()
			return nil, err // a *net.OpError, which says what failed
		}
		lns = append(lns, ln)
	}
	ka := cfg.KeepAlive
	if ka == nil && strings.HasPrefix(network, "tcp") {
		ka = &goKeepAlive
	}
	l, err := newListener(lns, cfg, ka)
	if err != nil {
		closeAll()
		return nil, err
	}
	fixed := strings.HasPrefix(network, "tcp") && !autoPort(addr)
	for i, s := range l.socks {
		s.fixedPort = fixed || i > 0
	}
	return l, nil
}

// autoPort reports whether addr asks the kernel to choose the port.
func autoPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err != nil || port == "" || port == "0"
}

// Wrap returns a Listener that accepts from ln, which it owns from then on:
// Close closes ln. When Wrap fails, ln stays the caller's. Use it for a listener made elsewhere (systemd socket
// activation, a test); Listen is the way to get several SO_REUSEPORT
// sockets, so cfg.ReusePort must be 0 or 1 here.
func Wrap(ln net.Listener, cfg Config) (*Listener, error) {
	if cfg.ReusePort > 1 {
		return nil, errors.New("wrap: reuse port needs Listen")
	}
	return newListener([]net.Listener{ln}, cfg, cfg.KeepAlive)
}

func newListener(lns []net.Listener, cfg Config, ka *net.KeepAliveConfig) (*Listener, error) {
	if cfg.MaxConns < 0 || cfg.MaxConnsPerIP < 0 || cfg.Rate < 0 || cfg.Burst < 0 || cfg.RefuseTimeout < 0 || cfg.OverloadPause < 0 {
		return nil, errors.New("listener: negative limit in config")
	}
	if cfg.RefuseTimeout == 0 {
		cfg.RefuseTimeout = defaultRefuseTimeout
	}
	l := &Listener{
		cfg:       cfg,
		keepAlive: ka,
		log:       cfg.Logger,
		done:      make(chan struct{}),
		failed:    make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConnsPerIP > 0 {
		l.perIP = make(map[netip.Addr]int)
	}
	if cfg.Rate > 0 && cfg.Rate != rate.Inf {
		l.limiter = rate.NewLimiter(cfg.Rate, max(cfg.Burst, 1))
	}
	for i, ln := range lns {
		s := &socket{index: i, ln: ln}
		if sc, ok := ln.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				s.raw = raw
			}
		}
		l.socks = append(l.socks, s)
	}
	if !cfg.NoReserveFD {
		l.spare = openSpareFD()
	}
	m, err := newMetrics(l, cfg)
	if err != nil {
		l.spare.close()
		return nil, err
	}
	l.m = m
	if len(l.socks) > 1 {
		l.handoff = make(chan net.Conn)
		for _, s := range l.socks {
			l.wg.Add(1)
			go l.acceptLoop(s)
		}
	}
	return l, nil
}

// Accept waits for and returns the next admitted connection. Connections
// over a limit never reach it: they are refused on the way. After Close it
// returns an error that wraps net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	if l.handoff == nil {
		return l.next(l.socks[0])
	}
	select {
	case c := <-l.handoff:
		return c, nil
	case <-l.failed:
		return nil, l.failErr
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// acceptLoop feeds Accept from one of several sockets until Close.
func (l *Listener) acceptLoop(s *socket) {
	defer l.wg.Done()
	for {
		c, err := l.next(s)
		if err != nil {
			if !l.closing() {
				l.fail(err)
			}
			return
		}
		select {
		case l.handoff <- c:
		case <-l.done:
			_ = c.Close()
			return
		}
	}
}

// fail records the first error that stopped a socket, for Accept to return.
func (l *Listener) fail(err error) {
	l.failOnce.Do(func() {
		l.failErr = err
		close(l.failed)
	})
}

func (l *Listener) closing() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// next accepts from s until it has a connection to hand out, refusing the
// ones over a limit and backing off while accept fails for lack of
// resources. It returns an error only when s is closed or broken.
func (l *Listener) next(s *socket) (net.Conn, error) {
	var delay time.Duration
	var failures int
	for {
		if s.ramp > 0 && s.rampLeft <= 0 {
			if !l.pause(s, s.rampUntil) {
				return nil, &net.OpError{Op: "accept", Net: s.ln.Addr().Network(), Addr: s.ln.Addr(), Err: net.ErrClosed}
			}
			continue
		}
		s.calls.Add(1)
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.closing() {
				return nil, err
			}
			kind := errorKind(err)
			l.m.acceptErrors.WithLabelValues(kind).Inc()
			if !retryable(kind, err) {
				return nil, err
			}
			if failures == 0 {
				l.log.Warn("accept failing, backing off", "kind", kind, "err", err)
			}
			failures++
			if kind == kindEMFILE || kind == kindENFILE {
				l.shed(s)
			}
			delay = min(max(2*delay, minBackoff), maxBackoff)
			if !l.sleep(delay) {
				return nil, &net.OpError{Op: "accept", Net: s.ln.Addr().Network(), Addr: s.ln.Addr(), Err: net.ErrClosed}
			}
			continue
		}
		if failures > 0 {
			l.log.Info("accept recovered", "failures", failures)
			failures, delay = 0, 0
		}
		tc, reason := l.admit(c, s)
		if tc != nil {
			l.rampTake(s)
			return tc, nil
		}
		if reason == ReasonOverload && l.cfg.OverloadPause > 0 && s.fixedPort && s.raw != nil {
			if !l.pause(s, time.Time{}) {
				return nil, &net.OpError{Op: "accept", Net: s.ln.Addr().Network(), Addr: s.ln.Addr(), Err: net.ErrClosed}
			}
		}
	}
}

// After an overload pause a socket admits at most rampStart connections
// in the first OverloadPause, and twice as many in each next one in which
// the server was not overloaded, until rampEnd: a storm still going on
// when the pause ends meets a trickle, not the whole open door, while the
// overload check (which needs a moment to see the cost) catches up.
// Within an interval, past its share, the socket stops listening until
// the interval ends.
const (
	rampStart = 16
	rampEnd   = 4096
)

// pause stops s listening, for Config.OverloadPause at a time while
// Overloaded says so, or until until (a ramp interval's end, when not
// zero) and then while Overloaded says so; then it listens again and sets
// s's ramp. It reports whether the listener is still open. It runs on s's
// accept path, so nobody accepts on s meanwhile. A socket that cannot stop
// listening goes on resetting connections one by one; one that cannot
// listen again (someone bound its address in the instant it was free) is
// retried every pause, with an error logged once.
func (l *Listener) pause(s *socket, until time.Time) bool {
	waiting, err := stopListening(s)
	if err != nil {
		l.log.Warn("cannot stop listening while overloaded; resetting connections instead", "socket", s.index, "err", err)
		s.ramp = 0
		return true
	}
	start := time.Now()
	l.m.pauses.Inc()
	l.m.paused.Inc()
	l.m.refused.WithLabelValues(string(ReasonOverload)).Add(float64(waiting))
	defer func() {
		l.m.paused.Dec()
		l.m.pausedSeconds.Add(time.Since(start).Seconds())
	}()
	overloaded := until.IsZero()
	wait := l.cfg.OverloadPause
	if !overloaded {
		wait = time.Until(until)
	}
	failing := false
	for {
		if !l.sleep(wait) {
			return false
		}
		wait = l.cfg.OverloadPause
		if l.cfg.Overloaded() {
			overloaded = true
			continue
		}
		if err := resumeListening(s); err != nil {
			if !failing {
				l.log.Error("cannot listen again after an overload pause; retrying", "socket", s.index, "addr", s.ln.Addr(), "err", err)
				failing = true
			}
			continue
		}
		if failing {
			l.log.Info("listening again", "socket", s.index)
		}
		break
	}
	if overloaded {
		s.ramp = rampStart
	} else if s.ramp *= 2; s.ramp > rampEnd {
		s.ramp = 0
		return true
	}
	s.rampLeft, s.rampUntil = s.ramp, time.Now().Add(l.cfg.OverloadPause)
	return true
}

// rampTake counts an admitted connection against s's ramp interval,
// starting the next interval, with twice the share, when the last one
// ended without its share used up.
func (l *Listener) rampTake(s *socket) {
	if s.ramp == 0 {
		return
	}
	if now := time.Now(); now.After(s.rampUntil) {
		if s.ramp *= 2; s.ramp > rampEnd {
			s.ramp = 0
			return
		}
		s.rampLeft, s.rampUntil = s.ramp, now.Add(l.cfg.OverloadPause)
	}
	s.rampLeft--
}

// sleep waits d, or until Close; it reports whether the listener is open.
func (l *Listener) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

// admit takes a slot for c and returns it wrapped, or refuses c and
// returns nil and why. The global cap is checked first, then the per-address cap,
// then the rate, so that a connection refused for a cap spends no token.
func (l *Listener) admit(c net.Conn, s *socket) (net.Conn, Reason) {
	var ip netip.Addr
	if l.perIP != nil {
		ip = remoteIP(c)
	}
	var reason Reason
	l.mu.Lock()
	switch {
	case l.cfg.MaxConns > 0 && l.open >= l.cfg.MaxConns:
		reason = ReasonLimit
	case l.perIP != nil && ip.IsValid() && l.perIP[ip] >= l.cfg.MaxConnsPerIP:
		reason = ReasonPerIP
	case l.cfg.Overloaded != nil && l.cfg.Overloaded():
		reason = ReasonOverload
	case l.limiter != nil && !l.limiter.Allow(): // last: a refused connection takes no token
		reason = ReasonRate
	default:
		l.open++
		if l.perIP != nil && ip.IsValid() {
			l.perIP[ip]++
		}
	}
	l.mu.Unlock()
	if reason != "" {
		l.refuse(c, reason)
		return nil, reason
	}
	l.m.accepted.Inc()
	if l.keepAlive != nil {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetKeepAliveConfig(*l.keepAlive)
		}
	}
	return &conn{Conn: c, l: l, ip: ip, sock: s.index}, ""
}

// release frees the slot of a connection handed out.
func (l *Listener) release(ip netip.Addr) {
	l.mu.Lock()
	l.open--
	if l.perIP != nil && ip.IsValid() {
		if n := l.perIP[ip] - 1; n > 0 {
			l.perIP[ip] = n
		} else {
			delete(l.perIP, ip)
		}
	}
	l.mu.Unlock()
}

// refuse closes c at once: with a reset when there is no Refuse hook, so
// the client learns immediately and the socket leaves no TIME_WAIT behind.
func (l *Listener) refuse(c net.Conn, r Reason) {
	l.m.refused.WithLabelValues(string(r)).Inc()
	if l.cfg.Refuse != nil {
		_ = c.SetDeadline(time.Now().Add(l.cfg.RefuseTimeout))
		l.cfg.Refuse(c, r)
		_ = c.Close()
		return
	}
	if lc, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = lc.SetLinger(0)
	}
	_ = c.Close()
}

// Open returns the number of connections handed out and not yet closed.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Addr returns the address the listener is bound to (that of its first
// socket; all of them share it).
func (l *Listener) Addr() net.Addr { return l.socks[0].ln.Addr() }

// Close closes every socket and waits for the accept goroutines to end.
// Connections already handed out stay open: they are the caller's. Calls
// after the first return nil.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		var errs []error
		for _, s := range l.socks {
			if err := s.ln.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		l.wg.Wait()
		l.spare.close()
		l.m.unregister()
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// Queue is the state of one socket's accept queue: connections the kernel
// has completed and nobody has accepted yet, and the most it holds
// (the listen backlog the kernel applied, capped by net.core.somaxconn).
type Queue struct {
	Len, Max int
}

// AcceptQueues returns the accept queue of each of the listener's sockets,
// read from the kernel (TCP_INFO). It fails with errors.ErrUnsupported
// where the kernel does not tell (systems other than Linux, sockets other
// than TCP).
func (l *Listener) AcceptQueues() ([]Queue, error) {
	qs := make([]Queue, 0, len(l.socks))
	for _, s := range l.socks {
		q, err := acceptQueue(s)
		if err != nil {
			return nil, fmt.Errorf("accept queue: %w", err)
		}
		qs = append(qs, q)
	}
	return qs, nil
}

func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Accept error kinds, the label values of the accept errors metric.
const (
	kindEMFILE  = "emfile"
	kindENFILE  = "enfile"
	kindENOBUFS = "enobufs"
	kindENOMEM  = "enomem"
	kindOther   = "other"
)

var errorKinds = []string{kindEMFILE, kindENFILE, kindENOBUFS, kindENOMEM, kindOther}

func errorKind(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return kindEMFILE
	case errors.Is(err, syscall.ENFILE):
		return kindENFILE
	case errors.Is(err, syscall.ENOBUFS):
		return kindENOBUFS
	case errors.Is(err, syscall.ENOMEM):
		return kindENOMEM
	}
	return kindOther
}

// retryable tells the errors that pass (resources freed, a peer that gave
// up during the handshake, a firewall's verdict on one connection) from a
// broken socket.
func retryable(kind string, err error) bool {
	if kind != kindOther {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM, syscall.ETIMEDOUT} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
