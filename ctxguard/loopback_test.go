package ctxguard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/ctxguard"
)

// run runs f against a loopback server under HTTP/1.1 and under HTTP/2
// (over TLS, as browsers speak it).
func run(t *testing.T, h http.Handler, f func(t *testing.T, s *loopback)) {
	for _, mode := range []string{"h1", "h2"} {
		t.Run(mode, func(t *testing.T) {
			s := &loopback{Server: httptest.NewUnstartedServer(h), proto: 1}
			s.Config.ErrorLog = log.New(&s.errors, "", 0)
			if mode == "h2" {
				s.EnableHTTP2 = true
				s.StartTLS()
				s.proto = 2
			} else {
				s.Start()
			}
			defer s.Close()
			f(t, s)
		})
	}
}

type loopback struct {
	*httptest.Server
	proto  int
	errors syncBuffer // the server's ErrorLog
}

func (s *loopback) do(t *testing.T, method, path string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != s.proto {
		t.Fatalf("spoke HTTP/%d, want HTTP/%d", resp.ProtoMajor, s.proto)
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestLoopbackMiddleware(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := ctxguard.New(ctxguard.Options{Registerer: reg})
	defer g.Close()

	causes := make(chan error, 1)
	watchCause := func(ctx context.Context) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
	}
	var panicLine int
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		ctxguard.Go(r.Context(), watchCause)
		// The goroutine is counted under the route while the handler
		// runs.
		fmt.Fprint(w, gauges(t, reg)["GET /ok"])
	})
	mux.HandleFunc("POST /panic", func(w http.ResponseWriter, r *http.Request) {
		ctxguard.Go(r.Context(), watchCause)
		_, _, panicLine, _ = runtime.Caller(0)
		panic("boom")
	})
	run(t, g.Handler(mux), func(t *testing.T, s *loopback) {
		body, err := s.do(t, "GET", "/ok")
		if err != nil {
			t.Fatal(err)
		}
		if body != "1" {
			t.Errorf("gauge in the handler %q, want 1", body)
		}
		if cause := <-causes; cause != ctxguard.ErrHandlerReturned {
			t.Errorf("cause %v, want ErrHandlerReturned", cause)
		}

		// POST: the client would send a GET again on the connection
		// net/http closes after the panic.
		if _, err := s.do(t, "POST", "/panic"); err == nil {
			t.Errorf("a panicking handler answered")
		}
		var pe *ctxguard.PanicError
		if cause := <-causes; !errors.As(cause, &pe) || pe.Value != "boom" {
			t.Errorf("cause %v, want a *PanicError with the panic value", cause)
		}
		if err := g.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		// net/http still recovers and logs the panic, with the stack
		// down to the line that panicked.
		site := fmt.Sprintf("loopback_test.go:%d", panicLine+1)
		waitFor(t, "the server to log the panic", func() bool {
			return strings.Contains(s.errors.String(), "panic serving")
		})
		if log := s.errors.String(); !strings.Contains(log, "boom") || !strings.Contains(log, site) {
			t.Errorf("server log lacks the panic value or its site %s:\n%s", site, log)
		}
		for root, v := range gauges(t, reg) {
			if v != 0 {
				t.Errorf("gauge %s=%v after every goroutine exited", root, v)
			}
		}
	})
}
