package ctxguard_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/ctxguard"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the randomized tests (0: from the clock)")

// Many concurrent requests, each starting a few goroutines that exit at
// random times around their request's end (some before it, some after,
// some starting more goroutines after it, some ignoring it long enough to
// be late), with a LateAfter short enough that reports run amid the
// exits: every gauge returns to 0, the histogram counts each request that
// had goroutines once, and every report is counted.
func TestRandomizedRequests(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	const (
		requests = 400
		workers  = 8
		paths    = 8
		maxRoots = 5
	)
	lateAfter := time.Duration(200+rng.IntN(3000)) * time.Microsecond
	t.Logf("LateAfter %v", lateAfter)
	logs := &recorder{}
	reg := prometheus.NewRegistry()
	g := ctxguard.New(ctxguard.Options{
		Registerer: reg, Logger: slog.New(logs), LateAfter: lateAfter, MaxRoots: maxRoots,
		Root: func(r *http.Request) string { return r.URL.Path },
	})
	defer g.Close()

	var started atomic.Int64
	sleep := func(r *rand.Rand, max time.Duration) { time.Sleep(time.Duration(r.Int64N(int64(max)))) }
	h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plan := r.Context().Value(planKey{}).(plan)
		for i := range plan.goroutines {
			rs := rand.New(rand.NewPCG(plan.seed, uint64(i)))
			kind := rs.IntN(4)
			ctxguard.Go(r.Context(), func(ctx context.Context) {
				started.Add(1)
				switch kind {
				case 0: // done before the handler returns, most likely
				case 1:
					<-ctx.Done()
					sleep(rs, 2*time.Millisecond)
				case 2: // starts another one after the end
					<-ctx.Done()
					sleep(rs, time.Millisecond)
					ctxguard.Go(ctx, func(context.Context) {
						started.Add(1)
						sleep(rs, 3*time.Millisecond)
					})
				case 3: // ignores its context
					sleep(rs, 6*time.Millisecond)
				}
			})
		}
		if plan.panics {
			panic(http.ErrAbortHandler)
		}
		sleep(rand.New(rand.NewPCG(plan.seed, 99)), time.Millisecond)
	}))

	plans := make([]plan, requests)
	withGoroutines := 0
	for i := range plans {
		plans[i] = plan{
			path:       fmt.Sprintf("/p%d", rng.IntN(paths)),
			goroutines: rng.IntN(5),
			panics:     rng.IntN(10) == 0,
			seed:       rng.Uint64(),
		}
		if plans[i].goroutines > 0 {
			withGoroutines++
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= requests {
					return
				}
				p := plans[i]
				ctx := context.WithValue(t.Context(), planKey{}, p)
				req, _ := http.NewRequestWithContext(ctx, "GET", p.path, nil)
				func() {
					defer func() {
						if v := recover(); v != nil && v != http.ErrAbortHandler {
							panic(v)
						}
					}()
					h.ServeHTTP(discard{}, req)
				}()
			}
		})
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v (%d still running)", err, g.Running())
	}
	g.Close() // waits for a report under way

	for root, v := range gauges(t, reg) {
		if v != 0 {
			t.Errorf("gauge %s=%v after Wait", root, v)
		}
	}
	if n := len(gauges(t, reg)); n > maxRoots+1 {
		t.Errorf("%d root labels, want at most %d", n, maxRoots+1)
	}
	if n, _ := latency(t, reg); n != uint64(withGoroutines) {
		t.Errorf("cancel latency count %d, want %d (requests that started goroutines)", n, withGoroutines)
	}
	recs := logs.records()
	var late float64
	for _, v := range lateCounts(t, reg) {
		late += v
	}
	if int(late) != len(recs) {
		t.Errorf("late counter %v, but %d reports", late, len(recs))
	}
	if len(recs) > int(started.Load()) {
		t.Errorf("%d reports for %d goroutines", len(recs), started.Load())
	}
	for _, r := range recs {
		if site, _ := r.attrs["site"].(string); !strings.Contains(site, "random_test.go:") {
			t.Errorf("report with site %q, want a line of this file", site)
		}
		if d, _ := r.attrs["since_end"].(time.Duration); d < lateAfter {
			t.Errorf("reported %v after the end, before LateAfter %v", d, lateAfter)
		}
	}
	t.Logf("%d requests, %d with goroutines, %d goroutines, %d late", requests, withGoroutines, started.Load(), len(recs))
}

type planKey struct{}

type plan struct {
	path       string
	goroutines int
	panics     bool
	seed       uint64
}

// discard is a ResponseWriter that keeps nothing.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}
