//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package stream

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// newProbe returns a non-blocking liveness check for conn: a one-byte
// peek that sees the peer's FIN or RST without consuming anything and
// without a goroutine parked on a read. Where the kernel reports hang-ups
// (hangups) this is the fallback for connections it cannot watch.
func newProbe(conn net.Conn) func() bool {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() bool {
		alive := true
		var b [1]byte
		_ = raw.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case err == nil && n == 0:
				alive = false // orderly shutdown by the peer
			case err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR):
				alive = false // reset or otherwise broken
			}
			return true // never wait for readiness
		})
		return alive
	}
}
