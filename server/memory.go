package server

import (
	"context"
	"runtime/debug"
	"time"
)

// releaseMemory returns memory to the operating system after a crowd of
// subscribers has come or gone. An idle Go process neither collects
// garbage (a collection is triggered by allocation, or forced only every
// two minutes) nor hurries to give freed pages back, so after a connection
// storm its RSS would stay near the peak for minutes: the subscriptions
// that left, or the garbage of parsing the requests of those that came (a
// subscription with 64 URL patterns leaves about 15 KB of it, request line
// and query fields, for a few hundred bytes it keeps).
func (s *Server) releaseMemory(ctx context.Context, period time.Duration) {
	watchCrowd(ctx, period, s.cfg.Hub.Subscribers, func() {
		// Twice: the first collection frees what the connections held,
		// the second what only became unreachable through it (pooled
		// buffers dropped at the first, finalized objects).
		debug.FreeOSMemory()
		debug.FreeOSMemory()
		s.log.Debug("returned memory after a crowd of subscribers came or went", "subscribers", s.cfg.Hub.Subscribers())
	})
}

// watchCrowd samples count every period and calls release, at most once
// per period: when it has fallen to half of its recent peak, by at least
// releaseMin; or when it has grown by at least releaseMin since the last
// release and then stopped growing for a period (the storm is over, its
// garbage is left).
func watchCrowd(ctx context.Context, period time.Duration, count func() int, release func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	peak := count()
	base := peak // the count at the last release, or at start
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := count()
		if n > peak {
			peak = n
			continue
		}
		if peak-n >= releaseMin && n <= peak/2 || peak-base >= releaseMin {
			release()
			peak, base = n, n
		}
	}
}

// releaseMin is how many subscribers must come or go before memory is
// given back; below it the gain is not worth a collection.
const releaseMin = 500
