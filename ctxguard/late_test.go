package ctxguard_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/ctxguard"
)

func TestLateGoroutineReportedOnceWithItsSite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &recorder{}
		reg := prometheus.NewRegistry()
		g := ctxguard.New(ctxguard.Options{Registerer: reg, Logger: slog.New(logs), LateAfter: 5 * time.Second})
		defer g.Close()

		release := make(chan struct{})
		var file string
		var line int
		mux := http.NewServeMux()
		mux.Handle("GET /leak/{id}", g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, file, line, _ = runtime.Caller(0)
			ctxguard.Go(r.Context(), func(context.Context) { <-release }) // ignores its context
		})))
		serve(mux, "GET", "/leak/1")
		site := fmt.Sprintf("%s:%d", file, line+1)

		time.Sleep(5*time.Second - time.Nanosecond)
		synctest.Wait()
		if recs := logs.records(); len(recs) != 0 {
			t.Fatalf("reported before LateAfter: %v", recs)
		}
		if g.Fires() != 0 {
			t.Fatalf("the watch fired %d times before LateAfter", g.Fires())
		}

		time.Sleep(time.Nanosecond)
		synctest.Wait()
		recs := logs.records()
		if len(recs) != 1 {
			t.Fatalf("got %d reports, want 1: %v", len(recs), recs)
		}
		rec := recs[0]
		if rec.level != slog.LevelWarn {
			t.Errorf("level %v, want WARN", rec.level)
		}
		if got := rec.attrs["site"]; got != site {
			t.Errorf("site %q, want %q", got, site)
		}
		// The handler's closure called Go with a closure of its own.
		const handler = "github.com/herald-hub/herald/ctxguard_test.TestLateGoroutineReportedOnceWithItsSite.func1.1"
		if got := rec.attrs["func"]; got != handler {
			t.Errorf("func %q, want %q", got, handler)
		}
		if got := rec.attrs["goroutine"]; got != handler+".1" {
			t.Errorf("goroutine %q, want %q", got, handler+".1")
		}
		if got := rec.attrs["root"]; got != "GET /leak/{id}" {
			t.Errorf("root %q, want the mux pattern", got)
		}
		if got := rec.attrs["since_end"]; got != 5*time.Second {
			t.Errorf("since_end %v, want exactly 5s", got)
		}
		if got := lateCounts(t, reg)["GET /leak/{id}"]; got != 1 {
			t.Errorf("late counter %v, want 1", got)
		}

		// Reported once: an hour later there is still one report.
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(logs.records()); n != 1 {
			t.Errorf("%d reports after an hour, want 1", n)
		}
		if g.Fires() != 1 {
			t.Errorf("the watch fired %d times, want 1", g.Fires())
		}

		close(release)
		if err := g.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := gauges(t, reg)["GET /leak/{id}"]; got != 0 {
			t.Errorf("gauge %v after exit, want 0", got)
		}
		if n, sum := latency(t, reg); n != 1 || sum != time.Hour.Seconds()+5 {
			t.Errorf("cancel latency count %d sum %v, want 1 and %v", n, sum, time.Hour.Seconds()+5)
		}
	})
}

// Goroutines that exit in time cost the watch no timer firing, hence no
// goroutine of its own.
func TestWatchQuietWithoutLateGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &recorder{}
		reg := prometheus.NewRegistry()
		g := ctxguard.New(ctxguard.Options{Registerer: reg, Logger: slog.New(logs), LateAfter: 5 * time.Second})
		defer g.Close()

		h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// One exits before the handler returns, others at
			// staggered times after the cancel, the last one just
			// before it would be late.
			done := make(chan struct{})
			ctxguard.Go(r.Context(), func(context.Context) { close(done) })
			<-done
			for _, d := range []time.Duration{0, time.Second, 5*time.Second - time.Nanosecond} {
				ctxguard.Go(r.Context(), func(ctx context.Context) {
					<-ctx.Done()
					time.Sleep(d)
				})
			}
		}))
		for range 3 {
			serve(h, "GET", "/")
			time.Sleep(time.Second)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if recs := logs.records(); len(recs) != 0 {
			t.Errorf("reports without a late goroutine: %v", recs)
		}
		if g.Fires() != 0 {
			t.Errorf("the watch fired %d times without a late goroutine", g.Fires())
		}
		if n, _ := latency(t, reg); n != 3 {
			t.Errorf("cancel latency count %d, want one per request (3)", n)
		}
	})
}

func TestCancelLatencyExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		g := ctxguard.New(ctxguard.Options{Registerer: reg})
		defer g.Close()

		mux := http.NewServeMux()
		mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
			for _, d := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond} {
				ctxguard.Go(r.Context(), func(ctx context.Context) {
					<-ctx.Done()
					time.Sleep(d)
				})
			}
		})
		var stashed context.Context
		mux.HandleFunc("/waits", func(w http.ResponseWriter, r *http.Request) {
			stashed = r.Context()
			done := make(chan struct{})
			ctxguard.Go(r.Context(), func(context.Context) { close(done) })
			<-done
			time.Sleep(time.Second) // the goroutine is long gone at the cancel
		})
		mux.HandleFunc("/none", func(w http.ResponseWriter, r *http.Request) {})
		h := g.Handler(mux)

		serve(h, "GET", "/none")
		synctest.Wait()
		if n, _ := latency(t, reg); n != 0 {
			t.Fatalf("a request without goroutines was observed (%d)", n)
		}
		serve(h, "GET", "/slow")
		synctest.Wait()
		if n, _ := latency(t, reg); n != 0 {
			t.Fatalf("observed before the last goroutine exited (%d)", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		n, sum := latency(t, reg)
		if want := (300 * time.Millisecond).Seconds(); n != 1 || sum != want {
			t.Fatalf("count %d sum %v, want 1 and %v (the last goroutine)", n, sum, want)
		}
		if h := byRoot(t, reg, "ctxguard_cancel_latency_seconds")["/slow"].GetHistogram(); h.GetSampleCount() != 1 {
			t.Errorf("not labelled by the pattern: %v", byRoot(t, reg, "ctxguard_cancel_latency_seconds"))
		}
		serve(h, "GET", "/waits")
		synctest.Wait()
		n, sum2 := latency(t, reg)
		if n != 2 || sum2 != sum {
			t.Errorf("count %d sum %v, want 2 and %v: a root whose goroutines exited before it ended observes 0", n, sum2, sum)
		}
		// A goroutine started on the ended root after its last one
		// exited does not observe the root a second time.
		ctxguard.Go(stashed, func(context.Context) { time.Sleep(time.Second) })
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n, _ := latency(t, reg); n != 2 {
			t.Errorf("count %d after a straggler on an observed root, want 2", n)
		}
	})
}

// A goroutine started after its request ended gets LateAfter of its own
// before it is reported, and the goroutines of the root reported before
// are not reported again.
func TestLateGraceForGoroutineStartedAfterEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &recorder{}
		g := ctxguard.New(ctxguard.Options{Logger: slog.New(logs), LateAfter: 5 * time.Second})
		defer g.Close()

		release := make(chan struct{})
		var first, second int
		h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _, first, _ = runtime.Caller(0)
			ctxguard.Go(r.Context(), func(ctx context.Context) {
				<-ctx.Done()
				time.Sleep(3 * time.Second)
				_, _, second, _ = runtime.Caller(0)
				ctxguard.Go(ctx, func(context.Context) { <-release })
				<-release // late too
			})
		}))
		serve(h, "GET", "/")
		sites := func() (out []string) {
			for _, r := range logs.records() {
				site := r.attrs["site"].(string)
				out = append(out, fmt.Sprintf("%s@%v", site[strings.LastIndexByte(site, ':')+1:], r.attrs["since_end"]))
			}
			return out
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		want := []string{fmt.Sprintf("%d@5s", first+1)}
		if got := sites(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("reports at 5s %v, want %v", got, want)
		}
		// Started at 3 s, the second has not run for 5 s before 8 s.
		time.Sleep(3*time.Second - time.Nanosecond)
		synctest.Wait()
		if got := sites(); len(got) != 1 {
			t.Fatalf("reports before 8s %v, want only the first", got)
		}
		// It is reported within twice LateAfter of its start, and the
		// first one is not reported again.
		time.Sleep(5 * time.Second)
		synctest.Wait()
		got := sites()
		if len(got) != 2 || got[0] != want[0] || !strings.HasPrefix(got[1], fmt.Sprintf("%d@", second+1)) {
			t.Fatalf("reports %v, want %v and then line %d", got, want, second+1)
		}
		since := logs.records()[1].attrs["since_end"].(time.Duration)
		if since < 8*time.Second || since > 13*time.Second {
			t.Errorf("since_end %v, want within [8s, 13s]", since)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if got := sites(); len(got) != 2 {
			t.Errorf("reports after an hour %v, want each goroutine once", got)
		}
		close(release)
		if err := g.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

// Several roots ending at different times are each reported at their own
// due time, off the one timer.
func TestLateRootsReportedInTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &recorder{}
		reg := prometheus.NewRegistry()
		g := ctxguard.New(ctxguard.Options{
			Registerer: reg, Logger: slog.New(logs), LateAfter: 5 * time.Second,
			Root: func(r *http.Request) string { return r.URL.Path },
		})
		defer g.Close()

		release := make(chan struct{})
		h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctxguard.Go(r.Context(), func(context.Context) { <-release })
		}))
		serve(h, "GET", "/a")
		time.Sleep(time.Second)
		quick := make(chan struct{})
		// Its goroutine exits in time: its root leaves the queue while
		// it is not the head.
		hq := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctxguard.Go(r.Context(), func(context.Context) { <-quick })
		}))
		serve(hq, "GET", "/quick")
		time.Sleep(time.Second)
		serve(h, "GET", "/b")
		close(quick)
		time.Sleep(10 * time.Second)
		synctest.Wait()

		recs := logs.records()
		var got []string
		for _, r := range recs {
			got = append(got, fmt.Sprintf("%s@%v", r.attrs["root"], r.attrs["since_end"]))
		}
		want := []string{"/a@5s", "/b@5s"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("reports %v, want %v", got, want)
		}
		if g.Fires() != 2 {
			t.Errorf("the watch fired %d times, want 2 (one per late root)", g.Fires())
		}
		if c := lateCounts(t, reg); c["/a"] != 1 || c["/b"] != 1 || c["/quick"] != 0 {
			t.Errorf("late counters %v", c)
		}
		close(release)
		if err := g.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCloseEndsTheWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &recorder{}
		reg := prometheus.NewRegistry()
		g := ctxguard.New(ctxguard.Options{Registerer: reg, Logger: slog.New(logs), LateAfter: 5 * time.Second})

		release := make(chan struct{})
		h := g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctxguard.Go(r.Context(), func(context.Context) { <-release })
		}))
		serve(h, "GET", "/")
		g.Close()
		g.Close() // twice is fine
		serve(h, "GET", "/")
		if g.Running() != 2 {
			t.Errorf("%d running after Close, want 2: Go keeps counting", g.Running())
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if recs := logs.records(); len(recs) != 0 || g.Fires() != 0 {
			t.Errorf("reports after Close: %v (%d fires)", recs, g.Fires())
		}
		close(release)
		if err := g.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := gauges(t, reg)[ctxguard.UnknownRoot]; got != 0 {
			t.Errorf("gauge %v, want 0", got)
		}
	})
}

func TestReportsOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &recorder{}
		g := ctxguard.New(ctxguard.Options{Logger: slog.New(logs), LateAfter: -1})
		defer g.Close()
		release := make(chan struct{})
		serve(g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctxguard.Go(r.Context(), func(context.Context) { <-release })
		})), "GET", "/")
		time.Sleep(time.Hour)
		synctest.Wait()
		if recs := logs.records(); len(recs) != 0 || g.Fires() != 0 {
			t.Errorf("reports with LateAfter < 0: %v", recs)
		}
		close(release)
		if err := g.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWaitGivesUpWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := ctxguard.New(ctxguard.Options{})
		defer g.Close()
		release := make(chan struct{})
		serve(g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctxguard.Go(r.Context(), func(ctx context.Context) {
				<-release
				// A goroutine started while Wait waits is waited for.
				ctxguard.Go(ctx, func(context.Context) { time.Sleep(time.Second) })
			})
		})), "GET", "/")

		errGrace := errors.New("grace over")
		ctx, cancel := context.WithTimeoutCause(t.Context(), time.Second, errGrace)
		defer cancel()
		if err := g.Wait(ctx); !errors.Is(err, errGrace) {
			t.Fatalf("Wait = %v, want the context's cause", err)
		}
		start := time.Now()
		close(release)
		if err := g.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("Wait returned after %v, want 1s: it missed the goroutine started while it waited", d)
		}
		if g.Running() != 0 {
			t.Errorf("%d running after Wait", g.Running())
		}
	})
}

// A goroutine started on the context of a request that had none, after
// the request ended, is reported with the time since the request ended.
func TestLateGoroutineStartedOnEndedRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &recorder{}
		reg := prometheus.NewRegistry()
		g := ctxguard.New(ctxguard.Options{Registerer: reg, Logger: slog.New(logs), LateAfter: 5 * time.Second})
		defer g.Close()
		var stashed context.Context
		serve(g.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			stashed = r.Context() // kept by something that outlives the request
		})), "GET", "/")
		time.Sleep(2 * time.Second)
		release := make(chan struct{})
		ctxguard.Go(stashed, func(context.Context) { <-release })
		time.Sleep(5 * time.Second)
		synctest.Wait()
		recs := logs.records()
		if len(recs) != 1 || recs[0].attrs["since_end"] != 7*time.Second {
			t.Fatalf("reports %v, want one at 7s after the request ended", recs)
		}
		time.Sleep(time.Second)
		close(release)
		if err := g.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n, sum := latency(t, reg); n != 1 || sum != 8 {
			t.Errorf("cancel latency count %d sum %v, want 1 and 8 (from the request's end)", n, sum)
		}
	})
}
