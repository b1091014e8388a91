package hub

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Spans the hub makes when Config.Tracer is set. Every helper here runs
// only then: a hub without a tracer makes no span call and allocates
// nothing for tracing.
const (
	spanAppend   = "herald.append"
	spanDispatch = "herald.dispatch"
	spanReplay   = "herald.replay"
)

// Attribute keys the hub's spans carry. None holds a token or an
// update's data.
const (
	attrSeq         = attribute.Key("herald.update.seq")
	attrSubscribers = attribute.Key("herald.dispatch.subscribers")
	attrLastEventID = attribute.Key("herald.resume.last_event_id")
	attrResumedFrom = attribute.Key("herald.resume.resumed_from")
	attrEarliest    = attribute.Key("herald.resume.earliest")
	attrReplayed    = attribute.Key("herald.replay.updates")
	attrHandedOver  = attribute.Key("herald.replay.handover_queued")
)

// startAppend starts the span around Engine.Append and, when the publish
// is traced, records on u the span the dispatch span will hang off: the
// publisher's when ctx carries one (the dispatch follows the append, it
// is not part of it), else the append's own. It runs before Append, since
// an engine may feed u to the dispatcher before Append returns.
func (h *Hub) startAppend(ctx context.Context, u *Update) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(ctx)
	ctx, span := h.cfg.Tracer.Start(ctx, spanAppend)
	if span.IsRecording() {
		sc := parent
		if !sc.IsValid() {
			sc = span.SpanContext()
		}
		u.span = &sc
	}
	return ctx, span
}

func endAppend(span trace.Span, u *Update, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "append failed")
	} else {
		span.SetAttributes(attrSeq.Int64(int64(u.Seq)))
	}
	span.End()
}

// startDispatch starts the dispatcher's span for an update this hub
// published, under the span Publish recorded. h.ctx ends only at Close,
// which makes no difference to a span.
func (h *Hub) startDispatch(u *Update) trace.Span {
	_, span := h.cfg.Tracer.Start(trace.ContextWithSpanContext(h.ctx, *u.span), spanDispatch)
	return span
}

func endDispatch(span trace.Span, u *Update, offered int) {
	span.SetAttributes(attrSeq.Int64(int64(u.Seq)), attrSubscribers.Int(offered))
	span.End()
}

// errClosedBeforeLive is what a replay span records when the subscription
// is closed before its replay handed over to live updates.
var errClosedBeforeLive = errors.New("closed before going live")

// endReplaySpan ends the replay's span, if it has one, with err (nil when
// the subscription went live).
func (s *Subscriber) endReplaySpan(err error) {
	rt := s.rt
	if rt == nil {
		return
	}
	s.rt = nil
	span := rt.span
	span.SetAttributes(attrReplayed.Int(rt.replayed))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
