package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/herald-hub/herald/sse"
)

func TestPlanTracing(t *testing.T) {
	const ep = "http://collector.example:4318"
	for _, c := range []struct {
		name     string
		env      map[string]string
		on       bool
		endpoint string
		err      string // part of the error, when one is wanted
	}{
		{name: "nothing set", env: nil},
		{name: "unrelated variables", env: map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}},
		{name: "exporter otlp", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true, endpoint: defaultTracesEndpoint},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep}, on: true, endpoint: ep + "/v1/traces"},
		{name: "endpoint with a path", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep + "/otel/"}, on: true, endpoint: ep + "/otel/v1/traces"},
		{name: "traces endpoint as is", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ep + "/custom"}, on: true, endpoint: ep + "/custom"},
		{name: "credentials kept out of the log", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://user:pw@collector.example/v1/traces?key=1"}, on: true, endpoint: "https://collector.example/v1/traces"},
		{name: "disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ep}},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ep}},
		{name: "http/json", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, on: true, endpoint: ep + "/v1/traces"},
		{name: "grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, err: "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"},
		{name: "grpc for traces", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, err: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"},
		{name: "traces protocol wins", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, on: true, endpoint: defaultTracesEndpoint},
		{name: "unknown protocol", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, err: "OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon"},
		{name: "other exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: "OTEL_TRACES_EXPORTER=zipkin"},
		{name: "bad endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, err: "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{name: "bad sampler", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, err: "OTEL_TRACES_SAMPLER=sometimes"},
		{name: "bad ratio", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, err: "OTEL_TRACES_SAMPLER_ARG=2"},
		{name: "ratio", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, on: true, endpoint: defaultTracesEndpoint},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := planTracing(func(k string) string { return c.env[k] })
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one naming %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.on != c.on {
				t.Fatalf("on = %v (%s), want %v", p.on, p.why, c.on)
			}
			if !p.on && p.why == "" {
				t.Error("off without saying why")
			}
			if p.on && p.endpoint != c.endpoint {
				t.Errorf("endpoint %q, want %q", p.endpoint, c.endpoint)
			}
		})
	}
}

// TestServeRefusesGRPC: serve does not start when the variables ask for
// OTLP over gRPC, and says which variable to change.
func TestServeRefusesGRPC(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	err := run(t.Context(), []string{"serve", "--addr", "127.0.0.1:0", "--engine", "memory", "--data-dir", t.TempDir()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc") {
		t.Fatalf("serve returned %v, want a refusal naming OTEL_EXPORTER_OTLP_PROTOCOL", err)
	}
}

// span is what the receiver keeps of an exported span.
type span struct {
	name, trace, id, parent, service string
	attrs                            map[string]string
}

// otlpReceiver is an OTLP/HTTP trace receiver on loopback: it decodes
// every POST /v1/traces (protobuf or JSON, gzipped or not) and keeps the
// spans.
type otlpReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	spans    []span
	requests int
	errs     []string
}

func newReceiver(t *testing.T) *otlpReceiver {
	rc := &otlpReceiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		rc.srv.Close()
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, e := range rc.errs {
			t.Errorf("receiver: %s", e)
		}
	})
	return rc
}

func (rc *otlpReceiver) fail(w http.ResponseWriter, format string, a ...any) {
	rc.mu.Lock()
	rc.errs = append(rc.errs, fmt.Sprintf(format, a...))
	rc.mu.Unlock()
	http.Error(w, "bad request", http.StatusBadRequest)
}

func (rc *otlpReceiver) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		rc.fail(w, "%s %s", r.Method, r.URL.Path)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			rc.fail(w, "gzip: %v", err)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		rc.fail(w, "read: %v", err)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	switch ct := r.Header.Get("Content-Type"); ct {
	case "application/x-protobuf":
		err = proto.Unmarshal(data, &req)
	case "application/json":
		err = protojson.Unmarshal(data, &req)
	default:
		err = fmt.Errorf("content type %q", ct)
	}
	if err != nil {
		rc.fail(w, "decode: %v", err)
		return
	}
	var got []span
	for _, rs := range req.GetResourceSpans() {
		service := attrString(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := span{
					name: s.GetName(), service: service,
					trace: hex.EncodeToString(s.GetTraceId()), id: hex.EncodeToString(s.GetSpanId()),
					parent: hex.EncodeToString(s.GetParentSpanId()), attrs: map[string]string{},
				}
				for _, kv := range s.GetAttributes() {
					sp.attrs[kv.GetKey()] = anyString(kv.GetValue())
				}
				got = append(got, sp)
			}
		}
	}
	rc.mu.Lock()
	rc.spans = append(rc.spans, got...)
	rc.requests++
	rc.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func attrString(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return anyString(kv.GetValue())
		}
	}
	return ""
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return v.String()
}

func (rc *otlpReceiver) snapshot() ([]span, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]span(nil), rc.spans...), rc.requests
}

// one returns the only span called name in trace id.
func one(t *testing.T, spans []span, trace, name string) span {
	t.Helper()
	var out []span
	for _, s := range spans {
		if s.trace == trace && s.name == name {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d %s spans in trace %s, want 1 (all: %v)", len(out), name, trace, spans)
	}
	return out[0]
}

const (
	pubTrace   = "0af7651916cd43dd8448eb211c80319c"
	subTrace   = "1bf7651916cd43dd8448eb211c80319d"
	callerSpan = "b7ad6b7169203331"
)

// tracedTraffic publishes three updates, the last with a traceparent,
// and subscribes with another, resuming after the first; it reads the two
// replayed updates and leaves the stream open. It returns what ends the
// stream.
func tracedTraffic(t *testing.T, h *hubProcess, token string) (closeStream func()) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	var ids []string
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPost, h.hubURL(), strings.NewReader(fmt.Sprintf("topic=https://example.com/t&data=%d", i)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+token)
		if i == 2 {
			req.Header.Set("traceparent", "00-"+pubTrace+"-"+callerSpan+"-01")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish: %d %s", resp.StatusCode, body)
		}
		ids = append(ids, string(body))
	}
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.hubURL()+"?match=https://example.com/t", nil)
	req.Header.Set("Last-Event-ID", ids[0])
	req.Header.Set("traceparent", "00-"+subTrace+"-"+callerSpan+"-01")
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	rd := sse.NewReader(bufio.NewReader(resp.Body))
	for _, want := range ids[1:] {
		ev, err := rd.Next()
		if err != nil || ev.ID != want {
			resp.Body.Close()
			cancel()
			t.Fatalf("replayed %q (%v), want %s", ev.ID, err, want)
		}
	}
	return func() {
		cancel()
		resp.Body.Close()
	}
}

// TestServeExportsTraces runs `herald serve` as a user would, with
// OTEL_EXPORTER_OTLP_ENDPOINT pointing at a receiver. The batch
// processor's delay is a minute, so the spans can only arrive through the
// flush at exit: what the receiver has after a SIGINT proves it.
func TestServeExportsTraces(t *testing.T) {
	rc := newReceiver(t)
	work, logs := t.TempDir(), t.TempDir()
	h := startHubEnv(t, work, logs, freeAddr(t), []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + rc.srv.URL,
		"OTEL_SERVICE_NAME=herald-e2e",
		"OTEL_BSP_SCHEDULE_DELAY=60000",
	}, "--engine", "memory", "--jwt-key", nodeSecret, "--anonymous")
	closeStream := tracedTraffic(t, h, nodeToken(t, h.hubURL()))
	defer closeStream()
	if _, n := rc.snapshot(); n != 0 {
		t.Fatalf("%d exports before exit, with a minute's batching delay", n)
	}
	if err := h.interrupt(10 * time.Second); err != nil {
		t.Fatalf("hub ended with %s after SIGINT", exitCode(err))
	}
	log, _ := os.ReadFile(h.stderr)
	if !strings.Contains(string(log), "tracing on") || !strings.Contains(string(log), rc.srv.URL+"/v1/traces") {
		t.Errorf("the log does not say tracing is on and where it exports:\n%s", log)
	}
	spans, _ := rc.snapshot()

	pub := one(t, spans, pubTrace, "herald.publish")
	if pub.parent != callerSpan {
		t.Errorf("publish span's parent %s, want the caller's %s", pub.parent, callerSpan)
	}
	if pub.service != "herald-e2e" {
		t.Errorf("service.name %q, want OTEL_SERVICE_NAME's herald-e2e", pub.service)
	}
	if pub.attrs["herald.update.topics"] != "1" || pub.attrs["http.response.status_code"] != "200" {
		t.Errorf("publish span attributes %v", pub.attrs)
	}
	if app := one(t, spans, pubTrace, "herald.append"); app.parent != pub.id {
		t.Errorf("append span's parent %s, want the publish span %s", app.parent, pub.id)
	}
	if d := one(t, spans, pubTrace, "herald.dispatch"); d.parent != pub.id {
		t.Errorf("dispatch span's parent %s, want the publish span %s", d.parent, pub.id)
	}

	sub := one(t, spans, subTrace, "herald.subscribe")
	if sub.parent != callerSpan || sub.attrs["herald.resume.requested"] != "true" {
		t.Errorf("subscribe span: parent %s, attributes %v", sub.parent, sub.attrs)
	}
	rp := one(t, spans, subTrace, "herald.replay")
	if rp.parent != sub.id || rp.attrs["herald.replay.updates"] != "2" || rp.attrs["herald.resume.earliest"] != "false" {
		t.Errorf("replay span: parent %s (want %s), attributes %v", rp.parent, sub.id, rp.attrs)
	}
}

// TestServeTracingOff: without the variables herald says tracing is off;
// with an endpoint set but OTEL_TRACES_EXPORTER=none or
// OTEL_SDK_DISABLED=true, the receiver gets nothing, even from the flush
// at exit.
func TestServeTracingOff(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
		why  string
	}{
		{"no variables", []string{"OTEL_SERVICE_NAME=herald-e2e"}, "neither OTEL_TRACES_EXPORTER=otlp nor an OTLP endpoint"},
		{"exporter none", []string{"OTEL_TRACES_EXPORTER=none"}, "OTEL_TRACES_EXPORTER=none"},
		{"sdk disabled", []string{"OTEL_SDK_DISABLED=true"}, "OTEL_SDK_DISABLED=true"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := newReceiver(t)
			env := c.env
			if c.name != "no variables" {
				env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+rc.srv.URL)
			}
			h := startHubEnv(t, t.TempDir(), t.TempDir(), freeAddr(t), env, "--engine", "memory", "--jwt-key", nodeSecret, "--anonymous")
			closeStream := tracedTraffic(t, h, nodeToken(t, h.hubURL()))
			closeStream()
			if err := h.interrupt(10 * time.Second); err != nil {
				t.Fatalf("hub ended with %s after SIGINT", exitCode(err))
			}
			if spans, n := rc.snapshot(); n != 0 {
				t.Errorf("%d exports (%d spans) with tracing off", n, len(spans))
			}
			log, _ := os.ReadFile(h.stderr)
			if !strings.Contains(string(log), "tracing off") || !strings.Contains(string(log), c.why) {
				t.Errorf("the log does not say tracing is off because %s:\n%s", c.why, log)
			}
		})
	}
}
