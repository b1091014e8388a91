package stream

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// hangups learns from the kernel which taken-over connections their
// clients have closed or reset, with no work per connection while nothing
// happens: the connections sit in one epoll set that reports only
// hang-ups (EPOLLRDHUP, EPOLLHUP, EPOLLERR; never readability), and one
// goroutine waits on it while at least one connection is watched. The
// sockets stay in Go's own poller too; an fd may belong to several epoll
// sets.
//
// The hub polls the flag a hang-up sets (Conn.Alive) on its shared clock,
// which costs an atomic load per subscriber instead of a system call.
//
// The waiting goroutine belongs to the Tracker, which counts it (hold,
// letGo) so that its Wait sees it end.
type hangups struct {
	mu    sync.Mutex
	epfd  int // -1 until the first watch; closed when the last one ends
	wake  [2]int
	next  uint64
	flags map[uint64]*atomic.Bool
}

const hangupEvents = syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR | -syscall.EPOLLET

// wakeToken marks the pipe that wakes the waiting goroutine.
const wakeToken = 0

// watch starts watching conn for owner. It returns the flag set when the
// client hangs up and a function to stop watching, which must run before
// the connection is closed. ok is false when conn cannot be watched.
func (w *hangups) watch(owner *Tracker, conn net.Conn) (gone *atomic.Bool, stop func(), ok bool) {
	if tc, isTLS := conn.(*tls.Conn); isTLS {
		conn = tc.NetConn()
	}
	sc, isSC := conn.(syscall.Conn)
	if !isSC {
		return nil, nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, nil, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flags == nil {
		if err := w.start(owner); err != nil {
			return nil, nil, false
		}
	}
	w.next++
	token := w.next
	flag := new(atomic.Bool)
	var fd int
	var cerr error
	err = raw.Control(func(f uintptr) {
		fd = int(f)
		ev := syscall.EpollEvent{Events: uint32(hangupEvents)}
		putToken(&ev, token)
		cerr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	})
	if err != nil || cerr != nil {
		if len(w.flags) == 0 {
			w.stopLocked()
		}
		return nil, nil, false
	}
	w.flags[token] = flag
	var once sync.Once
	return flag, func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			_ = raw.Control(func(f uintptr) {
				_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(f), nil)
			})
			delete(w.flags, token)
			if len(w.flags) == 0 {
				w.stopLocked()
			}
		})
	}, true
}

// start creates the epoll set and its waiting goroutine. w.mu is held.
func (w *hangups) start(owner *Tracker) error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := syscall.Pipe2(w.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	putToken(&ev, wakeToken)
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, w.wake[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(w.wake[0])
		syscall.Close(w.wake[1])
		return err
	}
	w.epfd = epfd
	w.flags = make(map[uint64]*atomic.Bool)
	owner.hold()
	go w.wait(owner, epfd, w.wake[0], w.wake[1])
	return nil
}

// stopLocked wakes the waiting goroutine so that it closes the set and
// exits. w.mu is held.
func (w *hangups) stopLocked() {
	if w.epfd < 0 {
		return // stopped already, or the set failed and closed itself
	}
	w.flags = nil
	_, _ = syscall.Write(w.wake[1], []byte{1})
	w.epfd = -1
}

// wait is the goroutine: it marks hung-up connections until woken through
// the pipe, then releases the set.
func (w *hangups) wait(owner *Tracker, epfd, wakeR, wakeW int) {
	defer owner.letGo()
	defer func() {
		syscall.Close(epfd)
		syscall.Close(wakeR)
		syscall.Close(wakeW)
	}()
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			// The set is unusable: forget it before its fds close, so
			// that no later watch or wake-up touches their numbers,
			// which the kernel may give to other files.
			w.mu.Lock()
			if w.epfd == epfd {
				w.flags, w.epfd = nil, -1
			}
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		for _, ev := range events[:n] {
			token := getToken(&ev)
			if token == wakeToken {
				if w.epfd != epfd {
					w.mu.Unlock()
					return
				}
				continue
			}
			if f := w.flags[token]; f != nil && w.epfd == epfd {
				f.Store(true)
			}
		}
		w.mu.Unlock()
	}
}

// putToken and getToken keep a 64-bit token in the event's data, so that
// a late event for a connection that is gone (its fd perhaps reused)
// matches nothing.
func putToken(ev *syscall.EpollEvent, t uint64) {
	ev.Fd = int32(uint32(t))
	ev.Pad = int32(uint32(t >> 32))
}

func getToken(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
