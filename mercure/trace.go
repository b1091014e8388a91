package mercure

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/herald-hub/herald/hub"
)

// Spans of the requests, made when Config.Tracer is set. The hub adds its
// own beneath them (herald.append, herald.dispatch, herald.replay).
const (
	spanPublish   = "herald.publish"
	spanSubscribe = "herald.subscribe"
)

// Attribute keys of the request spans. No attribute holds a token or an
// update's data; error messages are the ones the client gets, which name
// no token content either.
const (
	attrMethod      = attribute.Key("http.request.method")
	attrStatus      = attribute.Key("http.response.status_code")
	attrTopics      = attribute.Key("herald.update.topics")
	attrPrivate     = attribute.Key("herald.update.private")
	attrID          = attribute.Key("herald.update.id")
	attrMatchers    = attribute.Key("herald.subscribe.matchers")
	attrResume      = attribute.Key("herald.resume.requested")
	attrResumedFrom = attribute.Key("herald.resume.resumed_from")
	attrEarliest    = attribute.Key("herald.resume.earliest")
	attrSentAway    = attribute.Key("herald.subscribe.sent_away")
)

// reqSpan is a request's span. Its zero value, the one every request has
// when tracing is off, does nothing, so the handlers call it unguarded;
// none of its methods allocates then.
type reqSpan struct{ s trace.Span }

// startSpan starts the request's span, as a child of the W3C traceparent
// the request carries, if any, and returns the request with the span in
// its context, for the hub's spans to descend from.
func (h *Handler) startSpan(r *http.Request, name string) (*http.Request, reqSpan) {
	ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, s := h.cfg.Tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attrMethod.String(r.Method)))
	return r.WithContext(ctx), reqSpan{s}
}

func (sp reqSpan) event(name string) {
	if sp.s != nil {
		sp.s.AddEvent(name)
	}
}

// refuse records that the request was answered status with msg.
func (sp reqSpan) refuse(status int, msg string) {
	if sp.s == nil {
		return
	}
	sp.s.SetAttributes(attrStatus.Int(status))
	sp.s.SetStatus(codes.Error, msg)
}

// plainError answers the request with plainError and records it.
func (sp reqSpan) plainError(w http.ResponseWriter, status int, msg string) {
	sp.refuse(status, msg)
	plainError(w, status, msg)
}

// fail records an error the handler met, and answered with status (zero
// when the client had gone and got no answer).
func (sp reqSpan) fail(status int, err error) {
	if sp.s == nil {
		return
	}
	sp.s.RecordError(err)
	if status != 0 {
		sp.s.SetAttributes(attrStatus.Int(status))
	}
	sp.s.SetStatus(codes.Error, err.Error())
}

// update records what a publish carries.
func (sp reqSpan) update(topics int, private bool) {
	if sp.s != nil {
		sp.s.SetAttributes(attrTopics.Int(topics), attrPrivate.Bool(private))
	}
}

// published records a stored update.
func (sp reqSpan) published(id string) {
	if sp.s != nil {
		sp.s.SetAttributes(attrID.String(id), attrStatus.Int(http.StatusOK))
	}
}

// subscription records what a subscribe asks for.
func (sp reqSpan) subscription(matchers int, resume bool) {
	if sp.s != nil {
		sp.s.SetAttributes(attrMatchers.Int(matchers), attrResume.Bool(resume))
	}
}

// resumed records where a subscription resumes.
func (sp reqSpan) resumed(from string) {
	if sp.s != nil {
		sp.s.SetAttributes(attrResumedFrom.String(from), attrEarliest.Bool(from == hub.EarliestID))
	}
}

// sentAway records a subscription answered with an empty stream and a
// retry hint (a shutdown, a shed), for reason.
func (sp reqSpan) sentAway(reason string) {
	if sp.s == nil {
		return
	}
	sp.s.SetAttributes(attrSentAway.String(reason), attrStatus.Int(http.StatusOK))
	sp.s.SetStatus(codes.Error, "sent away: "+reason)
}

// live ends the span of a subscription that went live.
func (sp reqSpan) live() {
	sp.s.SetAttributes(attrStatus.Int(http.StatusOK))
	sp.s.End()
}

// endBeforeLive ends the span of a subscription whose stream ended, with
// why, unless the span ended when the stream went live. Only the stream's
// goroutine ends the span once it streams, so the check does not race.
func (sp reqSpan) endBeforeLive(why error) {
	if sp.s == nil || !sp.s.IsRecording() {
		return
	}
	sp.s.SetAttributes(attrStatus.Int(http.StatusOK))
	if why != nil {
		sp.s.RecordError(why)
		sp.s.SetStatus(codes.Error, "ended before going live: "+why.Error())
	}
	sp.s.End()
}

func (sp reqSpan) end() {
	if sp.s != nil {
		sp.s.End()
	}
}
