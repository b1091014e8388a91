package mercure_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/internal/spantest"
	"github.com/herald-hub/herald/mercure"
)

// A caller's trace, as a publisher or a subscriber sends it in traceparent.
const (
	callerTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan   = "00f067aa0ba902b7"
	callerHeader = "00-" + callerTrace + "-" + callerSpan + "-01"
)

// inTrace returns the ended spans of trace id called name.
func inTrace(rec *tracetest.SpanRecorder, id, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID().String() == id && s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// awaitSpan polls the recorder until the trace id has an ended span
// called name, and returns it.
func awaitSpan(t *testing.T, rec *tracetest.SpanRecorder, id, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ss := inTrace(rec, id, name); len(ss) > 0 {
			if len(ss) > 1 {
				t.Fatalf("%d %s spans in trace %s, want 1", len(ss), name, id)
			}
			return ss[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s span ended in trace %s within 5s", name, id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hasEvent(s sdktrace.ReadOnlySpan, name string) bool {
	for _, e := range s.Events() {
		if e.Name == name {
			return true
		}
	}
	return false
}

// TestTracePublish: a publish that carries a traceparent yields, in that
// trace, a server span herald.publish under the caller's span, the hub's
// append span beneath it, and the dispatch span that the dispatcher
// starts later, whose parent is the publish span.
func TestTracePublish(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		tr, rec := spantest.NewRecorder()
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true, tracer: tr})
		// One subscriber: the dispatch span counts it.
		th.subscribe("match="+url.QueryEscape("https://example.com/t"), nil)
		r := th.do(http.MethodPost, th.url, "topic=https://example.com/t&private=on&data=secret", map[string]string{
			"Authorization": "Bearer " + th.token(mercure.ActionPublish, false, "*"),
			"traceparent":   callerHeader,
		})
		if r.status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.status, r.body)
		}
		id := r.body
		pub := awaitSpan(t, rec, callerTrace, "herald.publish")
		if got := pub.Parent().SpanID().String(); got != callerSpan || !pub.Parent().IsRemote() {
			t.Errorf("publish span's parent %s (remote %v), want the caller's %s", got, pub.Parent().IsRemote(), callerSpan)
		}
		if pub.SpanKind() != trace.SpanKindServer {
			t.Errorf("publish span kind %v", pub.SpanKind())
		}
		spantest.WantAttr(t, pub, "herald.update.topics", 1)
		spantest.WantAttr(t, pub, "herald.update.private", true)
		spantest.WantAttr(t, pub, "herald.update.id", id)
		spantest.WantAttr(t, pub, "http.response.status_code", 200)
		for _, ev := range []string{"body read", "token validated", "update parsed", "authorized"} {
			if !hasEvent(pub, ev) {
				t.Errorf("publish span has no %q event: %v", ev, pub.Events())
			}
		}
		for _, kv := range pub.Attributes() {
			if strings.Contains(kv.Value.Emit(), "secret") {
				t.Errorf("the update's data is in attribute %s", kv.Key)
			}
		}
		app := awaitSpan(t, rec, callerTrace, "herald.append")
		if app.Parent().SpanID() != pub.SpanContext().SpanID() {
			t.Errorf("append span's parent %v, want the publish span %v", app.Parent().SpanID(), pub.SpanContext().SpanID())
		}
		d := awaitSpan(t, rec, callerTrace, "herald.dispatch")
		if d.Parent().SpanID() != pub.SpanContext().SpanID() {
			t.Errorf("dispatch span's parent %v, want the publish span %v", d.Parent().SpanID(), pub.SpanContext().SpanID())
		}
		// The anonymous subscriber may not read the private update, but
		// it was offered it: offers are what the span counts.
		spantest.WantAttr(t, d, "herald.dispatch.subscribers", 1)
	})
}

// TestTraceRefused: a refused request's span says why, with the status,
// and a refused publish appends nothing.
func TestTraceRefused(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		tr, rec := spantest.NewRecorder()
		th := newHub(t, m, options{draft7: true, draft8: true, tracer: tr})
		pubTok := "Bearer " + th.token(mercure.ActionPublish, false, "https://example.com/mine")
		for i, c := range []struct {
			method, query, body string
			auth                string
			name                string
			status              int
		}{
			{http.MethodPost, "", "data=x", pubTok, "herald.publish", 400},
			{http.MethodPost, "", "topic=https://example.com/other", pubTok, "herald.publish", 403},
			{http.MethodPost, "", "topic=https://example.com/mine", "Bearer not-a-token", "herald.publish", 401},
			{http.MethodGet, "?nothing=1", "", "", "herald.subscribe", 400},
			{http.MethodGet, "?match=https://example.com/t", "", "", "herald.subscribe", 401},
		} {
			traceID := fmt.Sprintf("%032x", i+1)
			hdr := map[string]string{"traceparent": "00-" + traceID + "-" + callerSpan + "-01"}
			if c.auth != "" {
				hdr["Authorization"] = c.auth
			}
			r := th.do(c.method, th.url+c.query, c.body, hdr)
			if r.status != c.status {
				t.Fatalf("case %d: status %d, want %d (%s)", i, r.status, c.status, r.body)
			}
			sp := awaitSpan(t, rec, traceID, c.name)
			spantest.WantAttr(t, sp, "http.response.status_code", c.status)
			if sp.Status().Code != codes.Error || sp.Status().Description != strings.TrimSpace(r.body) {
				t.Errorf("case %d: span status %v, want an error saying %q", i, sp.Status(), strings.TrimSpace(r.body))
			}
			if strings.Contains(fmt.Sprint(sp.Attributes(), sp.Events(), sp.Status()), "not-a-token") {
				t.Errorf("case %d: the token is on the span", i)
			}
			if n := len(inTrace(rec, traceID, "herald.append")); n != 0 {
				t.Errorf("case %d: a refused request appended (%d spans)", i, n)
			}
		}
	})
}

// TestTraceSubscribe: a resumed subscription's span covers its replay and
// ends at the handover to live, while the stream stays open and goes on
// delivering; the replay span beneath it says what was replayed.
func TestTraceSubscribe(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		tr, rec := spantest.NewRecorder()
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true, tracer: tr})
		q := "match=" + url.QueryEscape("https://example.com/t")
		// A live reader that has seen every update shows that the
		// dispatcher passed them, so the replay (not the handover
		// queue) writes them all.
		first := th.subscribe(q, nil)
		var ids []string
		for i := range 5 {
			ids = append(ids, th.mustPublish(fmt.Sprintf("topic=https://example.com/t&data=%d", i)))
		}
		first.ids(t, 5)

		s := th.subscribe(q, map[string]string{"Last-Event-ID": ids[1], "traceparent": callerHeader})
		if got := s.ids(t, 3); fmt.Sprint(got) != fmt.Sprint(ids[2:]) {
			t.Fatalf("replayed %v, want %v", got, ids[2:])
		}
		sub := awaitSpan(t, rec, callerTrace, "herald.subscribe")
		select {
		case <-s.done:
			t.Fatal("the stream ended: the span must end while it is open")
		default:
		}
		if sub.Parent().SpanID().String() != callerSpan {
			t.Errorf("subscribe span's parent %v, want the caller's %s", sub.Parent().SpanID(), callerSpan)
		}
		spantest.WantAttr(t, sub, "herald.subscribe.matchers", 1)
		spantest.WantAttr(t, sub, "herald.resume.requested", true)
		spantest.WantAttr(t, sub, "herald.resume.resumed_from", ids[1])
		spantest.WantAttr(t, sub, "herald.resume.earliest", false)
		spantest.WantAttr(t, sub, "http.response.status_code", 200)
		if sub.Status().Code == codes.Error {
			t.Errorf("subscribe span status %v", sub.Status())
		}
		for _, ev := range []string{"parsed", "authorized"} {
			if !hasEvent(sub, ev) {
				t.Errorf("subscribe span has no %q event", ev)
			}
		}
		rp := awaitSpan(t, rec, callerTrace, "herald.replay")
		if rp.Parent().SpanID() != sub.SpanContext().SpanID() {
			t.Errorf("replay span's parent %v, want the subscribe span", rp.Parent().SpanID())
		}
		if rp.EndTime().After(sub.EndTime()) {
			t.Error("the replay span ended after the subscribe span")
		}
		spantest.WantAttr(t, rp, "herald.replay.updates", 3)
		spantest.WantAttr(t, rp, "herald.resume.resumed_from", ids[1])

		// The stream lives on after its span.
		live := th.mustPublish("topic=https://example.com/t&data=live")
		if got := s.next(t).ID; got != live {
			t.Fatalf("live update %s, want %s", got, live)
		}
		if n := len(inTrace(rec, callerTrace, "herald.subscribe")); n != 1 {
			t.Errorf("%d subscribe spans", n)
		}
	})
}

// TestTraceSubscribeShed: a subscription sent away ends its span with the
// reason.
func TestTraceSubscribeShed(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		tr, rec := spantest.NewRecorder()
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true, tracer: tr, tune: func(c *mercure.Config) {
			c.Shed = func() string { return mercure.ShedOverload }
		}})
		r := th.do(http.MethodGet, th.url+"?match=https://example.com/t", "", map[string]string{"traceparent": callerHeader})
		checkShed(t, r, mercure.ShedOverload)
		sp := awaitSpan(t, rec, callerTrace, "herald.subscribe")
		spantest.WantAttr(t, sp, "herald.subscribe.sent_away", mercure.ShedOverload)
		if sp.Status().Code != codes.Error || !strings.Contains(sp.Status().Description, mercure.ShedOverload) {
			t.Errorf("span status %v, want an error naming %s", sp.Status(), mercure.ShedOverload)
		}
	})
}

// sinkEngine stores nothing and feeds nothing, so that the handler's own
// allocations are all there is to count.
type sinkEngine struct{ seq atomic.Uint64 }

func (e *sinkEngine) Listen(func(hub.Batch)) (hub.Position, error) {
	return hub.Position{Epoch: 1}, nil
}
func (e *sinkEngine) Append(_ context.Context, u *hub.Update) error {
	u.Seq = e.seq.Add(1)
	return nil
}
func (e *sinkEngine) Lookup(context.Context, string) (hub.Position, bool, error) {
	return hub.Position{}, false, nil
}
func (e *sinkEngine) Read(context.Context, hub.Position, int) (hub.Range, error) {
	return hub.Range{}, nil
}

// inProcess is a publish handler without a server, for allocation counts
// and benchmarks.
type inProcess struct {
	handler http.Handler
	req     *http.Request
	body    *strings.Reader
	close   func()
}

const benchForm = "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=%7B%22title%22%3A%22Dune%22%7D"

func newInProcess(tb testing.TB, eng hub.Engine, tr trace.Tracer, traceparent bool) *inProcess {
	const hubURL = "http://hub.example/.well-known/mercure"
	public, _ := url.Parse(hubURL)
	h, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1, Tracer: tr})
	if err != nil {
		tb.Fatal(err)
	}
	pk, _ := mercure.ParseKey(pubSecret, nil)
	v, err := mercure.NewValidator(mercure.TokenConfig{PublisherKey: pk, Issuer: "herald", Audience: hubURL, Draft8: true, Base: hubURL})
	if err != nil {
		tb.Fatal(err)
	}
	handler, err := mercure.New(mercure.Config{Hub: h, Tokens: v, PublicURL: public, Draft8: true, Tracer: tr})
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := mercure.Mint(mercure.MintOptions{Key: pk, Publish: []string{"*"}, TTL: time.Hour, Issuer: "herald", Audience: hubURL})
	if err != nil {
		tb.Fatal(err)
	}
	body := strings.NewReader(benchForm)
	req := httptest.NewRequest(http.MethodPost, hubURL, body)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+tok)
	if traceparent {
		req.Header.Set("traceparent", callerHeader)
	}
	return &inProcess{handler: handler, req: req, body: body, close: h.Close}
}

func (p *inProcess) publish(tb testing.TB) {
	p.body.Reset(benchForm)
	w := httptest.NewRecorder()
	p.handler.ServeHTTP(w, p.req)
	if w.Code != http.StatusOK {
		tb.Fatalf("publish: %d %s", w.Code, w.Body)
	}
}

// TestTraceOffAllocatesNothing: with no Tracer a publish allocates as
// much with a traceparent header as without one (the header is not even
// read); with a Tracer it allocates more, which shows the count can tell.
func TestTraceOffAllocatesNothing(t *testing.T) {
	tr, _ := spantest.NewRecorder()
	allocs := func(tr trace.Tracer, traceparent bool) float64 {
		p := newInProcess(t, &sinkEngine{}, tr, traceparent)
		defer p.close()
		return testing.AllocsPerRun(500, func() { p.publish(t) })
	}
	plain := allocs(nil, false)
	header := allocs(nil, true)
	on := allocs(tr, true)
	t.Logf("allocs per publish request: off %v, off with traceparent %v, on %v", plain, header, on)
	if header != plain {
		t.Errorf("off: %v allocs with a traceparent, %v without", header, plain)
	}
	if on <= plain {
		t.Errorf("on: %v allocs, off %v: the count cannot tell", on, plain)
	}
}
