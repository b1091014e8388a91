// Command chi shows ctxguard with the chi router: the guard is a chi
// middleware, and since chi sets Request.Pattern on the request it
// routes, the guard's default Root names each request by its route.
//
//	go run . -addr localhost:8080
//	curl localhost:8080/orders/7   # its leaked goroutine is reported 5 s later
//	curl localhost:8080/metrics
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-hub/herald/ctxguard"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	late := flag.Duration("late", 5*time.Second, "report goroutines running this long after their request ended")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	reg := prometheus.NewRegistry()
	g := ctxguard.New(ctxguard.Options{Registerer: reg, Logger: log.WithGroup("ctxguard"), LateAfter: *late})
	defer g.Close()

	stop := make(chan struct{}) // ends the demo's leaked goroutines at shutdown
	r := routes(g, stop)
	r.Method("GET", "/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: *addr, Handler: r}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-ctx.Done()
		shutdown, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		srv.Shutdown(shutdown)
		close(stop)
		// Every request has ended; wait for the goroutines they left.
		if err := g.Wait(shutdown); err != nil {
			log.Warn("goroutines still running at exit", "n", g.Running(), "err", err)
		}
	}()
	log.Info("listening", "addr", *addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
	<-drained
}

// routes returns the example's router. GET /orders/{id} answers at once
// and starts two goroutines: one ends with the request, the other ignores
// the request's context until stop is closed, a leak for the guard to
// report.
func routes(g *ctxguard.Guard, stop <-chan struct{}) chi.Router {
	r := chi.NewRouter()
	r.Use(g.Handler)
	r.Get("/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ctxguard.Go(ctx, func(ctx context.Context) {
			<-ctx.Done() // ends with the request
		})
		ctxguard.Go(ctx, func(context.Context) { <-stop }) // leak: ignores ctx
		fmt.Fprintf(w, "order %s accepted\n", chi.URLParam(r, "id"))
	})
	return r
}
