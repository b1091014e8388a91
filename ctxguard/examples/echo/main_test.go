package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/herald-hub/herald/ctxguard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The leaked goroutine of a request served over loopback is reported
// with the line of main.go that started it and the route.
func TestLeakReported(t *testing.T) {
	reports := make(chan slog.Record, 4)
	g := ctxguard.New(ctxguard.Options{
		Registerer: prometheus.NewRegistry(),
		Logger:     slog.New(chanHandler(reports)),
		LateAfter:  50 * time.Millisecond,
	})
	defer g.Close()
	stop := make(chan struct{})
	srv := httptest.NewServer(routes(g, stop))
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + "/orders/7")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "order 7 accepted\n" {
		t.Fatalf("body %q", body)
	}

	var rec slog.Record
	select {
	case rec = <-reports:
	case <-time.After(10 * time.Second):
		t.Fatal("no report of the leaked goroutine")
	}
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	t.Logf("%s %v", rec.Message, attrs)
	if want := "main.go:" + leakLine(t); !strings.HasSuffix(attrs["site"], want) {
		t.Errorf("site %q, want the leak's line %s", attrs["site"], want)
	}
	if attrs["root"] != "GET /orders/:id" {
		t.Errorf("root %q, want the echo route", attrs["root"])
	}

	close(stop)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case rec := <-reports:
		t.Errorf("a second report: %s", rec.Message)
	default:
	}
}

// leakLine returns the line of main.go that starts the leaked goroutine.
func leakLine(t *testing.T) string {
	f, err := os.Open("main.go")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		if strings.Contains(s.Text(), "// leak:") {
			return fmt.Sprint(n)
		}
	}
	t.Fatal("no leak in main.go")
	return ""
}

// chanHandler is a slog.Handler that sends every record on a channel.
type chanHandler chan slog.Record

func (h chanHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h chanHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h chanHandler) WithGroup(string) slog.Handler            { return h }
func (h chanHandler) Handle(_ context.Context, r slog.Record) error {
	h <- r.Clone()
	return nil
}
