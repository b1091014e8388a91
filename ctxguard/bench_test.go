package ctxguard_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/ctxguard"
)

// BenchmarkRequest compares a request through the guard with one through
// plain net/http, for a handler that does nothing and for one that starts
// a goroutine (a bare go statement, or one tracked by Go), in process and
// over loopback HTTP/1.1.
func BenchmarkRequest(b *testing.B) {
	g := ctxguard.New(ctxguard.Options{Registerer: prometheus.NewRegistry()})
	defer g.Close()
	var wg sync.WaitGroup
	noop := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		go func() { wg.Done() }()
	})
	tracked := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Add(1)
		ctxguard.Go(r.Context(), func(context.Context) { wg.Done() })
	})
	cases := []struct {
		name string
		h    http.Handler
	}{
		{"noop/plain", noop},
		{"noop/guarded", g.Handler(noop)},
		{"go/plain", bare},
		{"go/guarded-bare", g.Handler(bare)},
		{"go/guarded-tracked", g.Handler(tracked)},
	}
	for _, c := range cases {
		b.Run("inprocess/"+c.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/", nil)
			b.ReportAllocs()
			for b.Loop() {
				c.h.ServeHTTP(discard{}, req)
			}
			wg.Wait()
		})
	}
	for _, c := range cases {
		b.Run("loopback/"+c.name, func(b *testing.B) {
			srv := httptest.NewServer(c.h)
			defer srv.Close()
			client := srv.Client()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			wg.Wait()
		})
	}
}
