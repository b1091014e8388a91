package mercure_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/herald-hub/herald/engine/memory"
)

// BenchmarkPublishHandler runs the publish handler in process (no
// server, no network) over a memory engine: tracing off; on, every span
// handed synchronously to an exporter that drops it; on with the batch
// processor over that exporter; and on with the batch processor and the
// OTLP/HTTP exporter herald serves with, sending to a loopback receiver
// that discards what it gets. Every request carries a traceparent.
func BenchmarkPublishHandler(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer sink.Close()
	for _, tc := range []struct {
		name string
		make func() (trace.Tracer, func())
	}{
		{"off", func() (trace.Tracer, func()) { return nil, func() {} }},
		{"nop-exporter", func() (trace.Tracer, func()) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
			return tp.Tracer("bench"), func() { _ = tp.Shutdown(context.Background()) }
		}},
		{"batch", func() (trace.Tracer, func()) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
			return tp.Tracer("bench"), func() { _ = tp.Shutdown(context.Background()) }
		}},
		{"batch-otlp", func() (trace.Tracer, func()) {
			exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(sink.URL+"/v1/traces"))
			if err != nil {
				b.Fatal(err)
			}
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
			return tp.Tracer("bench"), func() { _ = tp.Shutdown(context.Background()) }
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tr, stop := tc.make()
			defer stop()
			eng := memory.New(memory.Options{})
			defer eng.Close()
			p := newInProcess(b, eng, tr, true)
			defer p.close()
			b.ReportAllocs()
			for b.Loop() {
				p.publish(b)
			}
		})
	}
}
