//go:build !linux

package mercure

import "net"

// newProbe has no non-blocking peek on this platform: a departed client
// is noticed when a write (at the latest a heartbeat) fails.
func newProbe(net.Conn) func() bool { return nil }
