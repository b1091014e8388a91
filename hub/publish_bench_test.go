package hub_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
)

// tracings are the ways a benchmark runs: tracing off (no Tracer), on
// with every span handed synchronously to an exporter that drops it, and
// on with the batch processor herald serves with, over the same
// exporter. Each returns the tracer and what ends it.
var tracings = []struct {
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
}

// BenchmarkPublish publishes into a memory engine (the dispatcher then
// offers each update to no one), with tracing off and on.
func BenchmarkPublish(b *testing.B) {
	for _, tc := range tracings {
		b.Run(tc.name, func(b *testing.B) {
			tr, stop := tc.make()
			defer stop()
			eng := memory.New(memory.Options{})
			h, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1, Tracer: tr})
			if err != nil {
				b.Fatal(err)
			}
			defer eng.Close()
			defer h.Close()
			ctx := context.Background()
			msg := hub.Message{Topics: []string{"https://example.com/books/1"}, Data: `{"title":"Dune"}`}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h.Publish(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
