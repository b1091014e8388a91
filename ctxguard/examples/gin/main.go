// Command gin shows ctxguard with gin: a small gin middleware runs the
// guard around the rest of the chain. It runs after gin's router, so it
// copies the route into Request.Pattern, which the guard's default Root
// reads, and each request is named by its route.
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

	"github.com/gin-gonic/gin"
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
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
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

// routes returns the example's gin engine. GET /orders/:id answers at
// once and starts two goroutines: one ends with the request, the other
// ignores the request's context until stop is closed, a leak for the
// guard to report.
func routes(g *ctxguard.Guard, stop <-chan struct{}) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery(), guard(g))
	r.GET("/orders/:id", func(c *gin.Context) {
		ctx := c.Request.Context()
		ctxguard.Go(ctx, func(ctx context.Context) {
			<-ctx.Done() // ends with the request
		})
		ctxguard.Go(ctx, func(context.Context) { <-stop }) // leak: ignores ctx
		c.String(http.StatusOK, "order %s accepted\n", c.Param("id"))
	})
	return r
}

// guard runs the rest of gin's chain inside the guard's middleware, under
// the request it derives. Middleware added with Use runs after gin's
// router, so the route is known and names the request, as http.ServeMux
// would.
func guard(g *ctxguard.Guard) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Request.Pattern = c.Request.Method + " " + c.FullPath()
		g.Handler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			c.Request = r
			c.Next()
		})).ServeHTTP(c.Writer, c.Request)
	}
}
