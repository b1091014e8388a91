package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/herald-hub/herald/listener"
)

// openListener checks the connection flags and listens on --addr with
// them, the listener's metrics on reg; overloaded turns new connections
// away while it says so. It returns the cap on open connections in force
// (0: none).
func openListener(ctx context.Context, c *serveConfig, log *slog.Logger, reg prometheus.Registerer, overloaded func() bool) (*listener.Listener, int, error) {
	maxConns, err := parseMaxConnections(c.maxConns, fdLimit())
	if err != nil {
		return nil, 0, err
	}
	if c.maxConnsPerIP < 0 || c.connectRate < 0 || c.connectBurst < 0 || c.acceptSockets < 1 {
		return nil, 0, errors.New("--max-connections-per-ip, --connect-rate and --connect-burst cannot be negative, nor --accept-sockets below 1")
	}
	burst := c.connectBurst
	if c.connectRate > 0 && burst == 0 {
		burst = max(1, int(math.Ceil(c.connectRate)))
	}
	ln, err := listener.Listen(ctx, "tcp", c.addr, listener.Config{
		MaxConns:      maxConns,
		MaxConnsPerIP: c.maxConnsPerIP,
		Rate:          rate.Limit(c.connectRate),
		Burst:         burst,
		Overloaded:    overloaded,
		OverloadPause: overloadPause,
		ReusePort:     c.acceptSockets,
		Registerer:    reg,
		MetricsPrefix: "herald_listener_",
		Logger:        log.WithGroup("listener"),
	})
	if err != nil {
		return nil, 0, fmt.Errorf("listen: %w", err)
	}
	return ln, maxConns, nil
}

// overloadPause is how often a listener that stopped listening while the
// hub is overloaded asks again (listener.Config.OverloadPause). The
// overload itself lasts at least two seconds once it trips
// (hub.Config.OverloadHold), so a tenth of a second adds little to it.
const overloadPause = 100 * time.Millisecond

// autoMaxConnections is what --max-connections auto allows for an
// open-files limit of fds: all of it but a tenth (at least 64), kept for
// the history's files, Redis connections, the admin listener and the
// accept path's spare descriptor. Unknown or tiny limits give no limit.
func autoMaxConnections(fds uint64) int {
	reserve := max(fds/10, 64)
	if fds <= reserve {
		return 0
	}
	return int(min(fds-reserve, 1<<30))
}

// parseMaxConnections reads --max-connections: auto, 0 (no limit) or a
// positive count.
func parseMaxConnections(s string, fds uint64) (int, error) {
	if s == "auto" {
		return autoMaxConnections(fds), nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--max-connections: want auto, 0 (no limit) or a count, not %q", s)
	}
	if fds > 0 && uint64(n) >= fds {
		return 0, fmt.Errorf("--max-connections %d is not below the open-files limit (%d): the process would run out of descriptors first; raise the limit (ulimit -n, LimitNOFILE=) or lower the flag", n, fds)
	}
	return n, nil
}

// shedConnectionsAt is how many open connections new subscriptions are
// sent away past (with a retry hint): nine tenths of the cap, so that the
// streams that would take the rest come back later, spread out, instead
// of being reset at the cap, and publishers and health checks still get
// in.
func shedConnectionsAt(maxConns int) int {
	if maxConns <= 0 {
		return 0
	}
	return max(1, maxConns-maxConns/10)
}
