//go:build !linux

package stream

import (
	"net"
	"sync/atomic"
)

// hangups has no kernel support on this platform; streams fall back to
// the peek probe or to failing writes.
type hangups struct{}

func (*hangups) watch(*Tracker, net.Conn) (*atomic.Bool, func(), bool) { return nil, nil, false }
