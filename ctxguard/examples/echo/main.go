// Command echo shows ctxguard with echo: the guard runs as echo
// middleware after echo's router (e.Use), behind a small middleware that
// copies the route into Request.Pattern, which the guard's default Root
// reads, so each request is named by its route.
//
//	go run . -addr localhost:8080
//	curl localhost:8080/orders/7   # its leaked goroutine is reported 5 s later
//	curl localhost:8080/metrics
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
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
	e := routes(g, stop)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	e.HideBanner = true
	srv := &http.Server{Addr: *addr, Handler: e}

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

// routes returns the example's echo. GET /orders/:id answers at once and
// starts two goroutines: one ends with the request, the other ignores the
// request's context until stop is closed, a leak for the guard to report.
func routes(g *ctxguard.Guard, stop <-chan struct{}) *echo.Echo {
	e := echo.New()
	e.Use(routePattern, echo.WrapMiddleware(g.Handler))
	e.GET("/orders/:id", func(c echo.Context) error {
		ctx := c.Request().Context()
		ctxguard.Go(ctx, func(ctx context.Context) {
			<-ctx.Done() // ends with the request
		})
		ctxguard.Go(ctx, func(context.Context) { <-stop }) // leak: ignores ctx
		return c.String(http.StatusOK, "order "+c.Param("id")+" accepted\n")
	})
	return e
}

// routePattern names the request by its echo route, as http.ServeMux
// would: middleware added with e.Use runs after echo's router, so the
// route is known here.
func routePattern(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Request().Pattern = c.Request().Method + " " + c.Path()
		return next(c)
	}
}
