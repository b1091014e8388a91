// Package spantest reads recorded OpenTelemetry spans in tests.
package spantest

import (
	"fmt"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Attr returns the value of the attribute key of s; ok is false when s
// has none.
func Attr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// WantAttr fails t unless s has the attribute key with the value want
// (compared as printed).
func WantAttr(t testing.TB, s sdktrace.ReadOnlySpan, key string, want any) {
	t.Helper()
	v, ok := Attr(s, key)
	if !ok {
		t.Errorf("%s has no attribute %s (has %v)", s.Name(), key, s.Attributes())
		return
	}
	if got := v.AsInterface(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: %s = %v, want %v", s.Name(), key, got, want)
	}
}

// NewRecorder returns a tracer whose spans, every one sampled, land in the
// returned recorder.
func NewRecorder() (trace.Tracer, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	return tp.Tracer("herald-test"), rec
}
