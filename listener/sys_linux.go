package listener

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortSupported: Linux spreads connections over the sockets sharing
// a port (since 3.9); BSD and macOS accept SO_REUSEPORT but hand every
// connection to one socket, so there Listen binds one.
const reusePortSupported = true

func controlReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_REUSEPORT: %w", serr)
	}
	return nil
}

// acceptQueue reads a listening socket's accept queue from TCP_INFO: for a
// socket in LISTEN the kernel reports the queue's length in tcpi_unacked
// and its maximum (the backlog) in tcpi_sacked.
func acceptQueue(s *socket) (Queue, error) {
	if s.raw == nil {
		return Queue{}, errors.ErrUnsupported
	}
	var q Queue
	var gerr error
	if err := s.raw.Control(func(fd uintptr) {
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		switch {
		case err != nil:
			gerr = err
		case ti.State != unix.BPF_TCP_LISTEN:
			gerr = errors.ErrUnsupported
		default:
			q = Queue{Len: int(ti.Unacked), Max: int(ti.Sacked)}
		}
	}); err != nil {
		return Queue{}, err
	}
	if errors.Is(gerr, unix.EOPNOTSUPP) || errors.Is(gerr, unix.ENOPROTOOPT) {
		gerr = errors.Join(errors.ErrUnsupported, gerr)
	}
	return q, gerr
}

func readNetstat() (map[string]uint64, error) {
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return nil, err
	}
	return parseNetstat(data)
}

// spareFD is a descriptor held in reserve for the moment the process runs
// out: closing it lets accept take the connections waiting in the kernel's
// queue, only to reset them at once, so clients learn in a round trip
// instead of waiting for a queue that does not move, and the queue has
// room again when descriptors come back.
type spareFD struct {
	mu sync.Mutex
	fd int // -1 while not held
}

// maxShed bounds the connections one shedding round resets, so that a
// flood cannot keep the accept goroutine from its back-off and Close.
const maxShed = 1024

func openSpareFD() *spareFD {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fd = -1
	}
	return &spareFD{fd: fd}
}

func (sp *spareFD) close() {
	if sp == nil {
		return
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.fd >= 0 {
		_ = unix.Close(sp.fd)
		sp.fd = -1
	}
}

// shed gives up the spare descriptor, resets the connections waiting on s
// (each takes the freed descriptor in turn), and takes the spare back. A
// socket shedding already, or a spare another part of the process took
// meanwhile, leaves the queue to the next back-off round.
func (l *Listener) shed(s *socket) {
	sp := l.spare
	if sp == nil || s.raw == nil || !sp.mu.TryLock() {
		return
	}
	defer sp.mu.Unlock()
	if sp.fd < 0 {
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return
		}
		sp.fd = fd
	}
	_ = unix.Close(sp.fd)
	sp.fd = -1
	n := 0
	_ = s.raw.Control(func(fd uintptr) {
		for n < maxShed {
			nfd, _, err := unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			if err != nil {
				return // EAGAIN: the queue is empty; EMFILE: someone took the descriptor
			}
			_ = unix.SetsockoptLinger(nfd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			_ = unix.Close(nfd)
			n++
		}
	})
	if fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		sp.fd = fd
	}
	if n > 0 {
		l.m.refused.WithLabelValues(string(ReasonNoFD)).Add(float64(n))
	}
}

// stopListening takes s out of the LISTEN state, keeping its address:
// shutdown(SHUT_RD) on a listening socket resets the connections in its
// accept queue and leaves it bound but closed, so the kernel answers new
// connections with a reset, as for a port nobody listens on. Its
// SO_REUSEADDR is cleared meanwhile, so that no other socket can bind the
// address while it is free. It returns how many connections were waiting.
func stopListening(s *socket) (waiting int, err error) {
	q, qerr := acceptQueue(s)
	if qerr != nil {
		return 0, qerr
	}
	s.backlog = q.Max
	var serr error
	if err := s.raw.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 0); serr != nil {
			return
		}
		if serr = unix.Shutdown(int(fd), unix.SHUT_RD); serr != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
	}); err != nil {
		return 0, err
	}
	return q.Len, serr
}

// resumeListening puts s back in the LISTEN state with the backlog it had.
// SO_REUSEADDR comes back first: without it listen would find the
// address taken by s's own connections still in TIME_WAIT.
func resumeListening(s *socket) error {
	var serr error
	if err := s.raw.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		serr = unix.Listen(int(fd), max(s.backlog, 1))
	}); err != nil {
		return err
	}
	return serr
}
