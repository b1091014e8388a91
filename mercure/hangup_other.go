//go:build !linux

package mercure

import (
	"net"
	"sync"
	"sync/atomic"
)

// hangups has no kernel support on this platform; streams fall back to
// the peek probe or to failing writes.
type hangups struct{ owner *sync.WaitGroup }

func (w *hangups) watch(net.Conn) (*atomic.Bool, func(), bool) { return nil, nil, false }
