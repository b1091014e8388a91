//go:build !linux

package listener

import (
	"errors"
	"syscall"
)

// reusePortSupported is false: outside Linux, SO_REUSEPORT does not spread
// connections over the sockets (BSD and macOS hand them all to one), so
// Listen binds one socket.
const reusePortSupported = false

func controlReusePort(_, _ string, _ syscall.RawConn) error { return nil }

func acceptQueue(*socket) (Queue, error) { return Queue{}, errors.ErrUnsupported }

func readNetstat() (map[string]uint64, error) { return nil, errors.ErrUnsupported }

// spareFD is Linux-only: elsewhere a process out of descriptors only
// backs off.
type spareFD struct{}

func openSpareFD() *spareFD { return nil }

func (*spareFD) close() {}

func (*Listener) shed(*socket) {}

func stopListening(*socket) (int, error) { return 0, errors.ErrUnsupported }

func resumeListening(*socket) error { return errors.ErrUnsupported }
