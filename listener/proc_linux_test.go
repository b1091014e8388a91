package listener

import (
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// listenSockets returns the inodes of the LISTEN sockets on port in
// /proc/net/tcp, sorted.
func listenSockets(t *testing.T, port int) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	var inodes []string
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		local := f[1]
		if i := strings.LastIndexByte(local, ':'); i < 0 || !strings.EqualFold(local[i+1:], portHex(port)) {
			continue
		}
		inodes = append(inodes, f[9])
	}
	sort.Strings(inodes)
	return inodes
}

func portHex(p int) string {
	const hexd = "0123456789ABCDEF"
	return string([]byte{hexd[p>>12&15], hexd[p>>8&15], hexd[p>>4&15], hexd[p&15]})
}

func TestMaxConnsPerIP(t *testing.T) {
	s := serve(t, Config{MaxConnsPerIP: 1})
	addr := s.l.Addr()
	dial(t, addr, "127.0.0.1")
	first := s.accepted(t)
	mustRefused(t, dial(t, addr, "127.0.0.1"))
	// Another address has its own allowance.
	dial(t, addr, "127.0.0.2")
	s.accepted(t)
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "per_ip"); got != 1 {
		t.Fatalf("refused{per_ip} = %v, want 1", got)
	}
	_ = first.Close()
	dial(t, addr, "127.0.0.1")
	s.accepted(t)
	mustRefused(t, dial(t, addr, "127.0.0.2"))
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "per_ip"); got != 2 {
		t.Fatalf("refused{per_ip} = %v, want 2", got)
	}
	if got := mustMetric(t, s.reg, "listener_refused_total", "reason", "limit"); got != 0 {
		t.Fatalf("refused{limit} = %v, want 0", got)
	}
}

func TestReusePortBindsNSockets(t *testing.T) {
	const n = 4
	s := serve(t, Config{ReusePort: n})
	port := s.l.Addr().(*net.TCPAddr).Port
	if got := listenSockets(t, port); len(got) != n {
		t.Fatalf("%d listening sockets on port %d, want %d", len(got), port, n)
	}
	// The kernel hashes each connection's addresses and ports to one
	// socket: 64 connections all landing on one of 4 has odds of 4^-63.
	bySocket := map[int]int{}
	for range 64 {
		c := dial(t, s.l.Addr(), "")
		sc := s.accepted(t)
		bySocket[sc.(*conn).sock]++
		_ = sc.Close()
		_ = c.Close()
	}
	if len(bySocket) < 2 {
		t.Fatalf("connections arrived through sockets %v only", bySocket)
	}
	t.Logf("connections by socket: %v", bySocket)
	qs, err := s.l.AcceptQueues()
	if err != nil || len(qs) != n {
		t.Fatalf("AcceptQueues = %v, %v; want %d queues", qs, err, n)
	}
	for i := range n {
		mustMetric(t, s.reg, "listener_accept_queue_max", "socket", strconv.Itoa(i))
	}
	if err := s.l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := listenSockets(t, port); len(got) != 0 {
		t.Fatalf("%d sockets still listening on port %d after Close", len(got), port)
	}
}

// TestAcceptQueueGauge: connections the kernel completed while nobody calls
// Accept are in the queue gauge, and leave it when accepted.
func TestAcceptQueueGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := listen(t, Config{Registerer: reg})
	somaxconn := readSysctl(t, "/proc/sys/net/core/somaxconn")
	if got := mustMetric(t, reg, "listener_accept_queue_max", "socket", "0"); int(got) != somaxconn {
		t.Fatalf("accept_queue_max = %v, want somaxconn %d", got, somaxconn)
	}
	if got := mustMetric(t, reg, "listener_accept_queue_length", "socket", "0"); got != 0 {
		t.Fatalf("accept_queue_length = %v before any connection", got)
	}
	const n = 5
	for range n {
		dial(t, l.Addr(), "")
	}
	eventually(t, "5 connections in the accept queue", func() bool {
		return mustMetric(t, reg, "listener_accept_queue_length", "socket", "0") == n
	})
	qs, err := l.AcceptQueues()
	if err != nil || len(qs) != 1 || qs[0].Len != n {
		t.Fatalf("AcceptQueues = %v, %v", qs, err)
	}
	for range n {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if got := mustMetric(t, reg, "listener_accept_queue_length", "socket", "0"); got != 0 {
		t.Fatalf("accept_queue_length = %v after accepting all", got)
	}
}

// TestKernelCountersRiseOnOverflow overflows a real accept queue: a raw
// socket listening with backlog 1 that nobody accepts from holds two
// connections, and the kernel drops the SYNs of the rest, counting them in
// ListenOverflows and ListenDrops. Those counters are the whole network
// namespace's, so other processes can only add to them: the test asks for
// a rise of at least what it caused.
func TestKernelCountersRiseOnOverflow(t *testing.T) {
	reg := prometheus.NewRegistry()
	listen(t, Config{Registerer: reg})
	ovBefore := mustMetric(t, reg, "listener_tcp_listen_overflows_total")
	drBefore := mustMetric(t, reg, "listener_tcp_listen_drops_total")

	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "backlog-1")
	defer f.Close()
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))

	// A dropped SYN is retried after a second; the dials give up sooner.
	const dials = 8
	var wg sync.WaitGroup
	var ok, failed atomic.Int32
	for range dials {
		wg.Go(func() {
			d := net.Dialer{Timeout: 300 * time.Millisecond}
			c, err := d.DialContext(t.Context(), "tcp", addr)
			if err != nil {
				failed.Add(1)
				return
			}
			ok.Add(1)
			_ = c.Close()
		})
	}
	wg.Wait()
	t.Logf("%d dials completed, %d did not", ok.Load(), failed.Load())
	if failed.Load() == 0 {
		t.Fatal("every dial completed: the queue never overflowed")
	}
	ov := mustMetric(t, reg, "listener_tcp_listen_overflows_total") - ovBefore
	dr := mustMetric(t, reg, "listener_tcp_listen_drops_total") - drBefore
	t.Logf("ListenOverflows +%v, ListenDrops +%v", ov, dr)
	if ov < float64(failed.Load()) || dr < float64(failed.Load()) {
		t.Fatalf("ListenOverflows +%v, ListenDrops +%v for %d dropped connections", ov, dr, failed.Load())
	}
	// Nobody accepts, so the queue is past its backlog: the kernel admits
	// backlog+1, and a handshake begun before it filled may still complete
	// into it. It holds at most the dials that completed: a client may
	// count as connected while the kernel drops its last ACK.
	if qs, err := (&Listener{socks: []*socket{rawSocket(t, f)}}).AcceptQueues(); err != nil || qs[0].Max != 1 || qs[0].Len <= qs[0].Max || qs[0].Len > int(ok.Load()) {
		t.Fatalf("backlog-1 queue = %v, %v; want past its max of 1, and at most the %d completed dials", qs, err, ok.Load())
	}
}

// rawSocket makes a socket of a raw listening descriptor, to read its queue.
func rawSocket(t *testing.T, f *os.File) *socket {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return &socket{raw: rc}
}

func TestKeepAliveConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *net.KeepAliveConfig
		want [4]int // SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT
	}{
		{"default", nil, [4]int{1, 15, 15, 9}},
		{"set", &net.KeepAliveConfig{Enable: true, Idle: 7 * time.Second, Interval: 3 * time.Second, Count: 4}, [4]int{1, 7, 3, 4}},
		{"off", &net.KeepAliveConfig{Enable: false}, [4]int{0, -1, -1, -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, Config{KeepAlive: tc.cfg})
			dial(t, s.l.Addr(), "")
			c := s.accepted(t)
			raw, err := c.(syscall.Conn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var got [4]int
			var gerr error
			_ = raw.Control(func(fd uintptr) {
				opts := [4][2]int{{unix.SOL_SOCKET, unix.SO_KEEPALIVE}, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE}, {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL}, {unix.IPPROTO_TCP, unix.TCP_KEEPCNT}}
				for i, o := range opts {
					got[i], gerr = unix.GetsockoptInt(int(fd), o[0], o[1])
					if gerr != nil {
						return
					}
				}
			})
			if gerr != nil {
				t.Fatal(gerr)
			}
			for i, w := range tc.want {
				if w >= 0 && got[i] != w {
					t.Fatalf("keep-alive options %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func readSysctl(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
