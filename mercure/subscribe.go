package mercure

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/sse"
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
	query, err := parseForm(r.URL.RawQuery, 2*h.cfg.MaxMatchers+16)
	if err != nil {
		plainError(w, http.StatusBadRequest, "too many query parameters")
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
			plainError(w, perr.status, perr.msg)
			return
		}
		params = append(params[:len(params):len(params)], body...)
	}
	sp, perr := h.parseSubscription(r, query, params)
	if perr != nil {
		plainError(w, perr.status, perr.msg)
		return
	}
	grant, _, ok := h.authenticate(w, r, query, ActionSubscribe)
	if !ok {
		return
	}
	if grant == nil && !h.cfg.Anonymous {
		h.challenge(w, http.StatusUnauthorized, "", "a subscriber token is required")
		return
	}
	opts := hub.SubscribeOptions{Matchers: sp.matchers, Resume: sp.resume, LastEventID: sp.lastID}
	if grant != nil {
		opts.CanRead = grant.CanRead
		opts.Expires = grant.Expires
		opts.Subject = grant.Subject
	}
	if h.cfg.MaxLifetime > 0 {
		if limit := time.Now().Add(h.cfg.MaxLifetime); opts.Expires.IsZero() || limit.Before(opts.Expires) {
			opts.Expires = limit
		}
	}
	if !opts.Expires.IsZero() && !opts.Expires.After(time.Now()) {
		h.challenge(w, http.StatusUnauthorized, "invalid_token", "token expired")
		return
	}
	sub, err := h.hub.Subscribe(r.Context(), opts)
	if err != nil {
		var budget *hub.BudgetError
		if errors.As(err, &budget) {
			plainError(w, http.StatusTooManyRequests, budget.Error())
			return
		}
		if errors.Is(err, hub.ErrShutdown) {
			// EventSource gives up for good on any status but 200, so a
			// stream that ends at once with a short retry is what makes
			// browsers come back and resume.
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-store")
			if sp.resume {
				// Nothing is sent, so the cursor stands where the client
				// left it: no loss to report.
				if h.cfg.Draft8 {
					w.Header().Set("Mercure-Last-Event-ID", sp.lastID)
				}
				if h.cfg.Draft7 {
					w.Header().Set("Last-Event-ID", sp.lastID)
				}
			}
			_, _ = io.WriteString(w, ": hub shutting down, reconnect\nretry: 1000\n\n")
			return
		}
		if r.Context().Err() == nil {
			h.log.Error("subscribe failed", "err", err)
			plainError(w, http.StatusServiceUnavailable, "history is unavailable; retry shortly")
		}
		return
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
		if rs, ok := hijackStream(w, http.StatusOK, &h.hangups); ok {
			// The stream leaves net/http: this handler returns, which
			// frees everything net/http keeps for the connection (its
			// buffers, the request, the deep stack of its goroutine), and
			// a fresh goroutine owned by the Handler writes the stream.
			// The hub ends it (client gone, expiry, shutdown), so it needs
			// no cancellation from the request, only its values.
			ctx := context.WithoutCancel(r.Context())
			h.streams.Add(1)
			go func() {
				defer h.streams.Done()
				if h.cfg.HijackedClosed != nil {
					defer h.cfg.HijackedClosed()
				}
				h.stream(ctx, sub, rs)
			}()
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	h.stream(r.Context(), sub, &stream{w: w, rc: http.NewResponseController(w)})
}

// stream sends the response head, then serves the subscription on st
// until it ends, says why when the client should know, and releases st.
func (h *Handler) stream(ctx context.Context, sub *hub.Subscriber, st streamCloser) {
	defer st.Close()
	if err := st.Flush(); err != nil {
		sub.Close()
		return
	}
	reason := sub.Serve(ctx, st)
	switch {
	case errors.Is(reason, hub.ErrSlowSubscriber), errors.Is(reason, hub.ErrExpired), errors.Is(reason, hub.ErrShutdown):
		// Say why before closing; the client reconnects and resumes.
		_ = st.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = st.Write(sse.AppendComment(nil, "closed: "+reason.Error()))
		_ = st.Flush()
		h.log.Debug("stream closed", "reason", reason)
	}
}

// WaitStreams waits for the streams running outside net/http (HTTP/1.1
// streams, whose connections the handler takes over) to end, or for ctx.
// Call it after hub.EndStreams at shutdown: http.Server.Shutdown does not
// know these connections.
func (h *Handler) WaitStreams(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		h.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// streamCloser is a hub.Stream the handler releases when the stream ends.
type streamCloser interface {
	hub.Stream
	Close() error
}

// stream adapts an HTTP response to hub.Stream.
type stream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *stream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *stream) Close() error                { return nil }
func (s *stream) Flush() error                { return s.rc.Flush() }
func (s *stream) SetWriteDeadline(t time.Time) error {
	if err := s.rc.SetWriteDeadline(t); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// parseSubscription reads matchers and the resume point. query is the URL's
// parameters alone; params is the union with a QUERY body.
func (h *Handler) parseSubscription(r *http.Request, query, params []field) (subscription, *publishError) {
	var sp subscription
	seen := make(map[hub.MatchKind]map[string]bool)
	count, patterns := 0, 0
	add := func(kind hub.MatchKind, value string) *publishError {
		if count++; count > h.cfg.MaxMatchers {
			return badRequest("more than %d topic matchers", h.cfg.MaxMatchers)
		}
		if seen[kind][value] {
			return nil // identical matchers are one subscription
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
		if seen[kind] == nil {
			seen[kind] = make(map[string]bool)
		}
		seen[kind][value] = true
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

var _ hub.Stream = (*stream)(nil)
