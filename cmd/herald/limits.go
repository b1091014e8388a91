package main

import (
	"fmt"
	"strconv"
)

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
