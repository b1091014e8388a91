package hub_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/internal/spantest"
)

// spansNamed returns the ended spans called name.
func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// TestTracePublishAndDispatch: a publish gets an append span beneath the
// caller's span, and the dispatcher, later and on its own goroutine, a
// dispatch span whose parent is the caller's span, with the update's Seq
// and how many subscribers it was offered to. Without a caller's span the
// dispatch span hangs off the append span.
func TestTracePublishAndDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := spantest.NewRecorder()
		f := newFixture(t, hub.Config{Tracer: tr})
		ctx := t.Context()
		a, b := &recorder{}, &recorder{}
		f.serve(ctx, f.onTopic("t"), a)
		f.serve(ctx, f.onTopic("t"), b)
		f.serve(ctx, f.onTopic("other"), &recorder{})

		pctx, parent := tr.Start(ctx, "publisher")
		u, err := f.hub.Publish(pctx, hub.Message{ID: "one", Topics: []string{"t"}})
		if err != nil {
			t.Fatal(err)
		}
		parent.End()
		f.publish("t", "sentinel", "", false)
		a.before(t, "sentinel")
		b.before(t, "sentinel")

		appends := spansNamed(rec, "herald.append")
		if len(appends) != 2 {
			t.Fatalf("%d append spans, want 2", len(appends))
		}
		psc := parent.SpanContext()
		ap := appends[0]
		if ap.Parent().SpanID() != psc.SpanID() || ap.SpanContext().TraceID() != psc.TraceID() {
			t.Errorf("append span's parent is %v, want the publisher's %v", ap.Parent().SpanID(), psc.SpanID())
		}
		spantest.WantAttr(t, ap, "herald.update.seq", u.Seq)

		dispatches := spansNamed(rec, "herald.dispatch")
		if len(dispatches) != 2 {
			t.Fatalf("%d dispatch spans, want 2", len(dispatches))
		}
		d := dispatches[0]
		if d.Parent().SpanID() != psc.SpanID() || d.SpanContext().TraceID() != psc.TraceID() {
			t.Errorf("dispatch span's parent is %v in trace %v, want the publisher's %v in %v",
				d.Parent().SpanID(), d.SpanContext().TraceID(), psc.SpanID(), psc.TraceID())
		}
		spantest.WantAttr(t, d, "herald.update.seq", u.Seq)
		spantest.WantAttr(t, d, "herald.dispatch.subscribers", 2)

		// The sentinel had no caller's span: its dispatch descends from
		// its append, in a trace of its own.
		sa, sd := appends[1], dispatches[1]
		if sd.Parent().SpanID() != sa.SpanContext().SpanID() || sd.SpanContext().TraceID() != sa.SpanContext().TraceID() {
			t.Errorf("root publish: dispatch parent %v, want its append span %v", sd.Parent().SpanID(), sa.SpanContext().SpanID())
		}
		if sa.SpanContext().TraceID() == psc.TraceID() {
			t.Error("a publish without a caller's span joined another trace")
		}
	})
}

// TestTraceNoDispatchSpanForStoredUpdates: an update that did not come
// through this hub's Publish (another node's, through a shared feed) has
// no span context and gets no dispatch span, though it is delivered.
func TestTraceNoDispatchSpanForStoredUpdates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := spantest.NewRecorder()
		f := newFixture(t, hub.Config{Tracer: tr})
		rec1 := &recorder{}
		f.serve(t.Context(), f.onTopic("t"), rec1)
		foreign := &hub.Update{ID: "foreign", Topics: []string{"t"}, Frame: []byte("id: foreign\ndata: x\n\n")}
		if err := f.eng.Append(t.Context(), foreign); err != nil {
			t.Fatal(err)
		}
		sentinel := f.publish("t", "sentinel", "", false)
		if got := rec1.before(t, "sentinel"); fmt.Sprint(got) != "[foreign]" {
			t.Fatalf("delivered %v before the sentinel, want [foreign]", got)
		}
		ds := spansNamed(rec, "herald.dispatch")
		if len(ds) != 1 {
			t.Fatalf("%d dispatch spans, want 1 (the sentinel's)", len(ds))
		}
		spantest.WantAttr(t, ds[0], "herald.update.seq", sentinel.Seq)
	})
}

// TestTraceReplay: a resumed subscription's replay span records where it
// resumed and how many updates it replayed, and ends at the handover to
// live updates, while the stream goes on; OnLive is called then, once.
func TestTraceReplay(t *testing.T) {
	for _, c := range []struct {
		name, from, resumedFrom string
		earliest                bool
		replayed                int
	}{
		{"known id", "3", "3", false, 6},
		{"earliest", hub.EarliestID, hub.EarliestID, true, 10},
		{"unknown id", "nope", hub.EarliestID, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr, rec := spantest.NewRecorder()
				f := newFixture(t, hub.Config{Tracer: tr, ReplayBatch: 4})
				ctx := t.Context()
				for i := range 10 {
					f.publish("t", fmt.Sprint(i), "", false)
				}
				// The dispatcher has passed them all: the replay, not the
				// handover queue, writes every one.
				synctest.Wait()
				var live atomic.Int32
				sctx, parent := tr.Start(ctx, "subscribe request")
				out := &recorder{}
				_, done := f.serve(sctx, hub.SubscribeOptions{
					Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")},
					Resume:   true, LastEventID: c.from,
					OnLive: func() { live.Add(1) },
				}, out)
				waitFor(t, "the handover", func() bool { return live.Load() == 1 })
				rs := spansNamed(rec, "herald.replay")
				if len(rs) != 1 {
					t.Fatalf("%d ended replay spans, want 1", len(rs))
				}
				if len(done) != 0 {
					t.Fatal("the stream ended")
				}
				r := rs[0]
				if r.Parent().SpanID() != parent.SpanContext().SpanID() {
					t.Errorf("replay span's parent %v, want the request's %v", r.Parent().SpanID(), parent.SpanContext().SpanID())
				}
				spantest.WantAttr(t, r, "herald.resume.last_event_id", c.from)
				spantest.WantAttr(t, r, "herald.resume.resumed_from", c.resumedFrom)
				spantest.WantAttr(t, r, "herald.resume.earliest", c.earliest)
				spantest.WantAttr(t, r, "herald.replay.updates", c.replayed)
				if r.Status().Code == codes.Error {
					t.Errorf("replay span status %v", r.Status())
				}
				// Live updates still flow, and nothing calls OnLive again.
				f.publish("t", "sentinel", "", false)
				got := out.before(t, "sentinel")
				if len(got) != c.replayed {
					t.Errorf("stream got %v before the sentinel, want %d replayed", got, c.replayed)
				}
				if n := live.Load(); n != 1 {
					t.Errorf("OnLive called %d times", n)
				}
				parent.End()
			})
		})
	}
}

// TestTraceReplayEndsWithError: a replay that cannot finish (its history
// was trimmed under it) ends its span with the error, and OnLive is never
// called.
func TestTraceReplayEndsWithError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := spantest.NewRecorder()
		mem := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 4}})
		f := newFixture(t, hub.Config{Engine: mem, Tracer: tr, ReplayBatch: 2})
		for i := range 4 {
			f.publish("t", fmt.Sprint(i), "", false)
		}
		synctest.Wait() // dispatched: the replay must read all of them
		var live atomic.Int32
		// The stream's first write parks, so that the history moves on
		// past what the replay has still to read.
		release := make(chan struct{})
		_, done := f.serve(t.Context(), hub.SubscribeOptions{
			Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")},
			Resume:   true, LastEventID: "0",
			OnLive: func() { live.Add(1) },
		}, &recorder{block: release})
		synctest.Wait()
		for i := 4; i < 12; i++ {
			f.publish("t", fmt.Sprint(i), "", false)
		}
		close(release)
		if err := endOf(t, "the replay", done); !errors.Is(err, hub.ErrLost) {
			t.Fatalf("Serve returned %v, want ErrLost", err)
		}
		rs := spansNamed(rec, "herald.replay")
		if len(rs) != 1 {
			t.Fatalf("%d replay spans, want 1", len(rs))
		}
		if rs[0].Status().Code != codes.Error {
			t.Errorf("replay span status %v, want an error", rs[0].Status())
		}
		if live.Load() != 0 {
			t.Error("OnLive called for a subscription that never went live")
		}
		_ = mem.Close()
	})
}

// TestTraceOff: without a Tracer the hub makes no span, even when the
// caller's context carries a recording one.
func TestTraceOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, rec := spantest.NewRecorder()
		f := newFixture(t, hub.Config{})
		ctx, parent := tr.Start(t.Context(), "caller")
		for i := range 3 {
			if _, err := f.hub.Publish(ctx, hub.Message{ID: fmt.Sprint(i), Topics: []string{"t"}}); err != nil {
				t.Fatal(err)
			}
		}
		out := &recorder{}
		f.serve(ctx, hub.SubscribeOptions{Matchers: []*hub.Matcher{f.matcher(hub.MatchExact, "t")}, Resume: true, LastEventID: "0"}, out)
		f.publish("t", "sentinel", "", false)
		if got := out.before(t, "sentinel"); fmt.Sprint(got) != "[1 2]" {
			t.Fatalf("got %v", got)
		}
		parent.End()
		if n := len(rec.Started()); n != 1 {
			t.Errorf("%d spans started, want only the caller's", n)
		}
	})
}

// sinkEngine stores nothing and feeds nothing: Publish's own allocations
// are then all there is to count.
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

// TestTraceOffAllocatesNothing: with no Tracer, Publish allocates as much
// under a caller's recording span as without one: no span call, no span
// context kept. With a Tracer it allocates more, which shows the count
// can tell.
func TestTraceOffAllocatesNothing(t *testing.T) {
	tr, _ := spantest.NewRecorder()
	allocs := func(tracer trace.Tracer, ctx context.Context) float64 {
		h, err := hub.New(hub.Config{Engine: &sinkEngine{}, Heartbeat: -1, Tracer: tracer})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		m := hub.Message{ID: "x", Topics: []string{"t"}, Data: "d"}
		return testing.AllocsPerRun(1000, func() {
			if _, err := h.Publish(ctx, m); err != nil {
				t.Fatal(err)
			}
		})
	}
	traced, parent := tr.Start(context.Background(), "caller")
	defer parent.End()
	plain := allocs(nil, context.Background())
	under := allocs(nil, traced)
	on := allocs(tr, traced)
	t.Logf("allocs per Publish: off %v, off under a caller's span %v, on %v", plain, under, on)
	if under != plain {
		t.Errorf("off: %v allocs under a caller's span, %v without", under, plain)
	}
	if on <= plain {
		t.Errorf("on: %v allocs, off %v: the count cannot tell", on, plain)
	}
}
