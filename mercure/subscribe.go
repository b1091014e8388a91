package mercure

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/sse"
	"github.com/herald-hub/herald/stream"
)

// subscription is a parsed subscribe request.
type subscription struct {
	matchers []*hub.Matcher
	lastID   string
	resume   bool
}

// subscribe handles GET and QUERY: parse the matchers and the resume
// point, authenticate, register with the hub, then stream until the client
// leaves, the token expires, the subscriber falls behind or the hub stops.
func (h *Handler) subscribe(w http.ResponseWriter, r *http.Request) {
	// Counted from here until the stream ends, so that a shutdown starting
	// at any point either refuses this request or waits for it.
	ticket, admitted := h.streams.Enter()
	defer ticket.Done()
	if admitted {
		h.stage("admitted")
	}
	var span reqSpan
	streaming := false // the stream owns the span from then on
	if h.cfg.Tracer != nil {
		r, span = h.startSpan(r, spanSubscribe)
		defer func() {
			if !streaming {
				span.end()
			}
		}()
	}
	query, err := parseForm(r.URL.RawQuery, 2*h.cfg.MaxMatchers+16)
	if err != nil {
		span.plainError(w, http.StatusBadRequest, "too many query parameters")
		return
	}
	params := query
	if r.Method == "QUERY" {
		var body []field
		var perr *publishError
		if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
			body, perr = h.readForm(w, r, 2*h.cfg.MaxMatchers+16, errSubscribeFields)
		}
		if perr != nil {
			span.plainError(w, perr.status, perr.msg)
			return
		}
		params = append(params[:len(params):len(params)], body...)
	}
	sp, perr := h.parseSubscription(r, query, params)
	if perr != nil {
		span.plainError(w, perr.status, perr.msg)
		return
	}
	span.subscription(len(sp.matchers), sp.resume)
	span.event("parsed")
	grant, _, ok := h.authenticate(w, r, query, ActionSubscribe, span)
	if !ok {
		return
	}
	if grant == nil && !h.cfg.Anonymous {
		h.challenge(w, span, http.StatusUnauthorized, "", "a subscriber token is required")
		return
	}
	if h.revoked.has(grant) {
		h.challenge(w, span, http.StatusUnauthorized, "invalid_token", "token revoked: its subject was disconnected by an administrator")
		return
	}
	opts := hub.SubscribeOptions{Matchers: sp.matchers, Resume: sp.resume, LastEventID: sp.lastID}
	if span.s != nil {
		opts.OnLive = span.live
	}
	if grant != nil {
		opts.CanRead = grant.CanRead
		opts.Expires = grant.Expires
		opts.Subject = grant.Subject
		// Subscription events are private: only a subscriber with a
		// token, and a selector that may reach their topics, watches.
		opts.Presence = h.watchesPresence(sp.matchers)
	}
	if h.cfg.MaxLifetime > 0 {
		if limit := time.Now().Add(h.cfg.MaxLifetime); opts.Expires.IsZero() || limit.Before(opts.Expires) {
			opts.Expires = limit
		}
	}
	if !opts.Expires.IsZero() && !opts.Expires.After(time.Now()) {
		h.challenge(w, span, http.StatusUnauthorized, "invalid_token", "token expired")
		return
	}
	span.event("authorized")
	if !admitted {
		h.refuse(w, sp, span)
		return
	}
	if h.cfg.Shed != nil {
		if reason := h.cfg.Shed(); reason != "" {
			h.shed(w, sp, span, reason)
			return
		}
	}
	release, ok := h.limits.enterSubject(opts.Subject)
	if !ok {
		h.shed(w, sp, span, ShedSubject)
		return
	}
	// Held until the stream ends, wherever it is written from; released
	// at once if it never starts.
	started := false
	defer func() {
		if !started {
			release()
		}
	}()
	sub, err := h.hub.Subscribe(r.Context(), opts)
	if err != nil {
		var budget *hub.BudgetError
		if errors.As(err, &budget) {
			span.plainError(w, http.StatusTooManyRequests, budget.Error())
			return
		}
		if errors.Is(err, hub.ErrShutdown) {
			h.refuse(w, sp, span)
			return
		}
		if r.Context().Err() == nil {
			h.log.Error("subscribe failed", "err", err)
			span.fail(http.StatusServiceUnavailable, err)
			plainError(w, http.StatusServiceUnavailable, "history is unavailable; retry shortly")
		} else {
			span.fail(0, err)
		}
		return
	}
	h.stage("subscribed")
	var pc *presenceConn
	if h.presence != nil {
		// Announced once registered, so that a subscriber of its own
		// subscription's events sees it begin.
		if pc, err = h.presence.join(r.Context(), grant, sp.matchers, sub); err != nil {
			sub.Close()
			if errors.Is(err, hub.ErrShutdown) {
				h.refuse(w, sp, span)
				return
			}
			if r.Context().Err() == nil {
				h.log.Error("announce a subscription", "err", err)
				span.fail(http.StatusServiceUnavailable, err)
				plainError(w, http.StatusServiceUnavailable, "the subscription could not be announced; retry shortly")
			} else {
				span.fail(0, err)
			}
			return
		}
	}
	if sp.resume {
		span.resumed(sub.ResumedFrom())
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0")
	hd.Set("X-Accel-Buffering", "no")
	if sp.resume {
		if h.cfg.Draft8 {
			hd.Set("Mercure-Last-Event-ID", sub.ResumedFrom())
		}
		if h.cfg.Draft7 {
			hd.Set("Last-Event-ID", sub.ResumedFrom())
		}
	}
	if r.ProtoMajor == 1 && !h.cfg.NoHijack {
		if c, err := ticket.Hijack(w, http.StatusOK); err == nil {
			h.stage("hijacked")
			// The stream leaves net/http: this handler returns, which
			// frees everything net/http keeps for the connection (its
			// buffers, the request, the deep stack of its goroutine), and
			// a fresh goroutine, counted by the same ticket, writes the
			// stream. The hub ends it (client gone, expiry, shutdown), so
			// it needs no cancellation from the request, only its values.
			ctx := context.WithoutCancel(r.Context())
			started, streaming = true, true
			ticket.Go(func() {
				defer release()
				if h.cfg.HijackedClosed != nil {
					defer h.cfg.HijackedClosed()
				}
				h.stream(ctx, sub, c, span, pc)
			})
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	streaming = true
	h.stream(r.Context(), sub, ticket.Response(w), span, pc)
}

// stage calls the test hook, if any.
func (h *Handler) stage(name string) {
	if h.hold != nil {
		h.hold(name)
	}
}

// refuse answers a subscription the hub does not take because it is
// shutting down. EventSource gives up for good on any status but 200, so
// an event stream that ends at once with a retry hint is what makes
// browsers come back and resume, spread over the retry window.
func (h *Handler) refuse(w http.ResponseWriter, sp subscription, span reqSpan) {
	span.sentAway("shutdown")
	h.sendAway(w, sp, ": hub shutting down, reconnect\n", retryMin, retryMax)
}

// shed answers a subscription the hub does not take now, for reason
// (Shed*), the way refuse does, with a longer and wider retry window.
func (h *Handler) shed(w http.ResponseWriter, sp subscription, span reqSpan, reason string) {
	h.limits.shed.WithLabelValues(reason).Inc()
	span.sentAway(reason)
	h.sendAway(w, sp, ": shed: "+reason+", reconnect later\n", shedRetryMin, shedRetryMax)
}

// sendAway answers with an event stream that holds nothing but comment
// and a retry field drawn from [lo, hi] milliseconds.
func (h *Handler) sendAway(w http.ResponseWriter, sp subscription, comment string, lo, hi int64) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	if sp.resume {
		// Nothing is sent, so the cursor stands where the client left
		// it: no loss to report.
		if h.cfg.Draft8 {
			w.Header().Set("Mercure-Last-Event-ID", sp.lastID)
		}
		if h.cfg.Draft7 {
			w.Header().Set("Last-Event-ID", sp.lastID)
		}
	}
	_, _ = w.Write(appendRetryIn([]byte(comment), lo, hi))
}

// Clients sent away by a shutdown are told to come back after a delay
// drawn uniformly from [retryMin, retryMax]. A stream's end at shutdown
// makes every client reconnect, and with one fixed delay they would all
// come back in the same instant, to this node after a restart or to the
// others behind the load balancer. Spread over four seconds, each second
// sees a quarter of them, which the hub takes (a subscribe is cheap;
// resuming reads history by position); the first second is left to the
// restart itself, so fewer clients meet a closed port and back off
// further. EventSource waits this long before its first reconnection.
const (
	retryMin = 1000 // milliseconds
	retryMax = 5000
)

// appendRetry appends a retry field with a delay drawn from the window,
// and the blank line that ends the event.
func appendRetry(b []byte) []byte { return appendRetryIn(b, retryMin, retryMax) }

// appendRetryIn appends a retry field drawn from [lo, hi] milliseconds and
// the blank line that ends the event.
func appendRetryIn(b []byte, lo, hi int64) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, lo+rand.Int64N(hi-lo+1), 10)
	return append(b, "\n\n"...)
}

// stream sends the response head, then serves the subscription on st
// until it ends, says why when the client should know, and releases st.
// The request's span ends when the stream goes live (Serve calls
// OnLive), or when it ends before. pc, when not nil, is the subscriber's
// record of active subscriptions, which leaves with the stream.
func (h *Handler) stream(ctx context.Context, sub *hub.Subscriber, st streamCloser, span reqSpan, pc *presenceConn) {
	if h.presence != nil {
		defer h.presence.leave(pc) // after the stream is closed
	}
	defer st.Close()
	if err := st.Flush(); err != nil {
		sub.Close()
		span.endBeforeLive(err)
		return
	}
	reason := sub.Serve(ctx, st)
	span.endBeforeLive(reason)
	switch {
	case errors.Is(reason, hub.ErrSlowSubscriber), errors.Is(reason, hub.ErrExpired), errors.Is(reason, hub.ErrShutdown), errors.Is(reason, hub.ErrLost),
		errors.Is(reason, hub.ErrDisconnected):
		// Say why before closing; the client reconnects and resumes (after
		// a loss, to be told earliest). The deadline holds even on a
		// stream whose client stopped reading, so a shutdown waits for
		// this write CloseTimeout at most. A shutdown or a replaced
		// history ends every stream at once: their clients come back
		// spread over the retry window.
		msg := sse.AppendComment(nil, "closed: "+reason.Error())
		if errors.Is(reason, hub.ErrShutdown) || errors.Is(reason, hub.ErrLost) {
			msg = appendRetry(msg)
		}
		_ = st.SetWriteDeadline(time.Now().Add(stream.CloseTimeout))
		_, _ = st.Write(msg)
		_ = st.Flush()
		h.log.Debug("stream closed", "reason", reason)
	}
}

// streamCloser is a hub.Stream the handler releases when the stream ends.
type streamCloser interface {
	hub.Stream
	Close() error
}

// parseSubscription reads matchers and the resume point. query is the URL's
// parameters alone; params is the union with a QUERY body.
func (h *Handler) parseSubscription(r *http.Request, query, params []field) (subscription, *publishError) {
	sp := subscription{matchers: make([]*hub.Matcher, 0, min(len(params), h.cfg.MaxMatchers))}
	count, patterns := 0, 0
	add := func(kind hub.MatchKind, value string) *publishError {
		if count++; count > h.cfg.MaxMatchers {
			return badRequest("more than %d topic matchers", h.cfg.MaxMatchers)
		}
		// Identical matchers are one subscription. A scan of at most
		// MaxMatchers short strings costs less than the maps it replaced,
		// which were a large share of a subscribe's garbage.
		for _, m := range sp.matchers {
			if m.Kind() == kind && m.Value() == value {
				return nil
			}
		}
		// The hub's table hands out the compiled copy other subscribers
		// share, and compiles only what no one holds yet.
		m, err := h.hub.Matchers().Get(kind, value, h.base)
		if err != nil {
			return badRequest("invalid %s matcher %q: %v", kind, value, err)
		}
		if m.IsPattern() {
			if patterns++; patterns > h.cfg.MaxPatterns {
				return badRequest("more than %d URL patterns and URI templates in one subscription (the per-subscription pattern budget); exact topics do not count", h.cfg.MaxPatterns)
			}
		}
		sp.matchers = append(sp.matchers, m)
		return nil
	}
	for _, f := range params {
		var err *publishError
		switch {
		case h.cfg.Draft7 && f.name == "topic":
			err = add(hub.MatchSelector, f.value)
		case h.cfg.Draft8 && (f.name == "match" || f.name == "match_exact"):
			err = add(hub.MatchExact, f.value)
		case h.cfg.Draft8 && f.name == "match_urlpattern":
			err = add(hub.MatchURLPattern, f.value)
		case h.cfg.Draft8 && len(f.name) >= 5 && strings.EqualFold(f.name[:5], "match"):
			err = badRequest("unknown matcher parameter %q: this hub supports match, match_exact and match_urlpattern", f.name)
		}
		if err != nil {
			return sp, err
		}
	}
	if len(sp.matchers) == 0 {
		switch {
		case h.cfg.Draft8 && h.cfg.Draft7:
			return sp, badRequest("missing topic matcher: add match=<topic> (or topic=<selector> for draft-07 clients)")
		case h.cfg.Draft8:
			return sp, badRequest("missing topic matcher: add match=<topic>")
		default:
			return sp, badRequest("missing topic selector: add topic=<selector>")
		}
	}
	// Resume point: the Last-Event-ID header wins, then the query
	// component, then a QUERY body.
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		sp.lastID, sp.resume = v, true
	} else if v, ok := h.lastEventParam(query); ok {
		sp.lastID, sp.resume = v, true
	} else if v, ok := h.lastEventParam(params[len(query):]); ok {
		sp.lastID, sp.resume = v, true
	}
	if sp.resume {
		if len(sp.lastID) > h.cfg.MaxFieldBytes {
			return sp, badRequest("last event id is longer than %d bytes", h.cfg.MaxFieldBytes)
		}
		if sp.lastID == "" || !hub.ValidText(sp.lastID) {
			return sp, badRequest("last event id is empty or contains invalid UTF-8, control or format characters")
		}
	}
	return sp, nil
}

func (h *Handler) lastEventParam(fs []field) (string, bool) {
	for _, f := range fs {
		if (h.cfg.Draft8 && f.name == "last_event_id") || (h.cfg.Draft7 && f.name == "lastEventID") {
			return f.value, true
		}
	}
	return "", false
}
