package ctxguard_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/ctxguard"
)

// A handler starts two goroutines: one ends with its request, the other
// ignores its context and is reported once it has outlived the request
// by LateAfter, with the line that started it.
func Example() {
	reported := make(chan struct{}, 1)
	logger := slog.New(&notify{
		Handler: slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: stable}),
		ch:      reported,
	})
	g := ctxguard.New(ctxguard.Options{
		Registerer: prometheus.NewRegistry(),
		Logger:     logger,
		LateAfter:  50 * time.Millisecond,
	})
	defer g.Close()

	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctxguard.Go(r.Context(), func(ctx context.Context) {
			<-ctx.Done() // ends with the request
		})
		ctxguard.Go(r.Context(), func(context.Context) {
			<-release // a leak: never looks at its context
		})
		fmt.Fprintln(w, "accepted")
	})
	srv := httptest.NewServer(g.Handler(mux)) // the guard wraps the mux
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + "/orders/7")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))

	<-reported
	close(release)
	// At shutdown, after http.Server.Shutdown: wait for the stragglers.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("drained:", g.Wait(ctx) == nil)
	// Output:
	// accepted
	// level=WARN msg="goroutine still running after its request ended" root="GET /orders/{id}" site=example_test.go:41 func=github.com/herald-hub/herald/ctxguard_test.Example.func1 goroutine=github.com/herald-hub/herald/ctxguard_test.Example.func1.2
	// drained: true
}

// notify passes records on and signals each one.
type notify struct {
	slog.Handler
	ch chan struct{}
}

func (n *notify) Handle(ctx context.Context, r slog.Record) error {
	err := n.Handler.Handle(ctx, r)
	n.ch <- struct{}{}
	return err
}

// stable keeps the output of the example the same from run to run: no
// time, no durations, no callers, and a site without its directory.
func stable(_ []string, a slog.Attr) slog.Attr {
	switch a.Key {
	case slog.TimeKey, "since_end", "callers":
		return slog.Attr{}
	case "site":
		return slog.String("site", filepath.Base(a.Value.String()))
	}
	return a
}
