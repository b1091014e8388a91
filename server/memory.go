package server

import (
	"context"
	"runtime/debug"
	"time"
)

// releaseMemory returns memory to the operating system after a crowd of
// subscribers has left. An idle Go process neither collects garbage (a
// collection is triggered by allocation, or forced only every two minutes)
// nor hurries to give freed pages back, so after a connection storm its RSS
// would stay near the peak for minutes. When the number of subscribers
// falls to half of its recent peak, by at least releaseMin, a collection
// that also returns freed memory runs at once; at most once per period.
func (s *Server) releaseMemory(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	peak := s.cfg.Hub.Subscribers()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := s.cfg.Hub.Subscribers()
		if n > peak {
			peak = n
			continue
		}
		if peak-n >= releaseMin && n <= peak/2 {
			// Twice: the first collection frees what the connections
			// held, the second what only became unreachable through it
			// (pooled buffers dropped at the first, finalized objects).
			debug.FreeOSMemory()
			debug.FreeOSMemory()
			s.log.Debug("returned memory after subscribers left", "peak", peak, "now", n)
			peak = n
		}
	}
}

// releaseMin is how many subscribers must leave before memory is given
// back; below it the gain is not worth a collection.
const releaseMin = 500
