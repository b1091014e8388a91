package mercure

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Pages of the subscriptions API: a collection holds at most limit
// subscriptions (default DefaultSubscriptionsPage, at most
// MaxSubscriptionsPage), those whose id sorts after the after parameter;
// a page that is not the last says where the next begins in "next".
const (
	DefaultSubscriptionsPage = 1000
	MaxSubscriptionsPage     = 10_000
)

// subsRequest is a parsed subscriptions API path.
type subsRequest struct {
	form subForm
	// What the path names: the whole collection (no field set), the
	// collection of one matcher (matchType, match for draft-08; match for
	// draft-07), or one subscription (subscriber too).
	matchType, match, subscriber string
	single                       bool
}

// serveSubscriptions answers the subscriptions API: the collection of
// active subscriptions, that of one matcher, and one subscription, each in
// the form of the draft the path (or, for the whole collection, the token)
// speaks.
func (h *Handler) serveSubscriptions(w http.ResponseWriter, r *http.Request, rest string) {
	h.cors(w, r)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		h.preflight(w, r)
		return
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		plainError(w, http.StatusMethodNotAllowed, "method not allowed: the subscriptions API is read with GET")
		return
	}
	query, err := parseForm(r.URL.RawQuery, 16)
	if err != nil {
		plainError(w, http.StatusBadRequest, "too many query parameters")
		return
	}
	grant, _, ok := h.authenticate(w, r, query, ActionSubscribe, reqSpan{})
	if !ok {
		return
	}
	if grant == nil {
		h.challenge(w, reqSpan{}, http.StatusUnauthorized, "", "a subscriber token is required to read the subscriptions API")
		return
	}
	if h.revoked.has(grant) {
		h.challenge(w, reqSpan{}, http.StatusUnauthorized, "invalid_token", "token revoked: its subject was disconnected by an administrator")
		return
	}
	req, perr := h.parseSubsPath(rest, grant)
	if perr != nil {
		plainError(w, perr.status, perr.msg)
		return
	}
	// The topic to authorize is the requested path, in relative form, as
	// the subscription events' topics are written.
	path := r.URL.EscapedPath()
	if !grant.CanRead([]string{path}) {
		h.challenge(w, reqSpan{}, http.StatusForbidden, "insufficient_scope", "the token does not grant subscribe on "+path)
		return
	}
	limit, after := DefaultSubscriptionsPage, ""
	for _, f := range query {
		switch f.name {
		case "limit":
			n, err := strconv.Atoi(f.value)
			if err != nil || n < 1 || n > MaxSubscriptionsPage {
				plainError(w, http.StatusBadRequest, "limit must be a whole number from 1 to "+strconv.Itoa(MaxSubscriptionsPage))
				return
			}
			limit = n
		case "after":
			after = f.value
		}
	}

	// The cursor first, then the list: whatever changes after the list
	// was read is announced after the cursor (see presence.join).
	cursor, err := h.hub.LastEventID(r.Context())
	if err != nil {
		h.log.Error("subscriptions API: read the last event id", "err", err)
		plainError(w, http.StatusServiceUnavailable, "history is unavailable; retry shortly")
		return
	}
	entries, err := h.presence.snapshot(r.Context(), req.form, func(a *activeSub, subscriber string) bool {
		switch {
		case req.single:
			return a.matchType == req.matchType && a.match == req.match && subscriber == req.subscriber
		case req.match != "" && (a.matchType != req.matchType || a.match != req.match):
			return false
		}
		return a.topic > after
	})
	if err != nil {
		h.log.Error("subscriptions API: read the cluster's subscriptions", "err", err)
		plainError(w, http.StatusServiceUnavailable, "the cluster's subscriptions are unavailable; retry shortly")
		return
	}

	hd := w.Header()
	hd.Set("Cache-Control", "private, no-cache")
	if req.form == form8 {
		hd.Set("Content-Type", "application/json")
		hd.Set("Link", `<`+h.base+`>; rel="mercure"; last-event-id="`+quoteSafe(cursor)+`"; type="mercure"; content-type="application/json"`)
	} else {
		hd.Set("Content-Type", "application/ld+json")
		hd.Set("Link", h.link)
	}
	if req.single {
		if len(entries) == 0 {
			plainError(w, http.StatusNotFound, "no active subscription "+path)
			return
		}
		e := entries[0]
		doc := e.sub.document(e.subscriber, true, true)
		if req.form == form7 {
			d := doc.(subDoc7)
			writeJSON(w, struct {
				subDoc7
				LastEventID string `json:"lastEventID"`
			}{d, cursor})
			return
		}
		writeJSON(w, doc)
		return
	}
	next := ""
	if len(entries) > limit {
		entries = entries[:limit]
		q := url.Values{"after": {entries[limit-1].sub.topic}, "limit": {strconv.Itoa(limit)}}
		next = path + "?" + q.Encode()
	}
	docs := make([]any, len(entries))
	for i, e := range entries {
		docs[i] = e.sub.document(e.subscriber, true, false)
	}
	if req.form == form7 {
		writeJSON(w, subsCollection7{Context: jsonLDContext, ID: path, Type: "Subscriptions", LastEventID: cursor, Subscriptions: docs, Next: next})
		return
	}
	writeJSON(w, subsCollection8{ID: path, Type: "subscriptions", Subscriptions: docs, Next: next})
}

type subsCollection8 struct {
	ID            string `json:"id"`
	Type          string `json:"type"`
	Subscriptions []any  `json:"subscriptions"`
	Next          string `json:"next,omitempty"`
}

type subsCollection7 struct {
	Context       string `json:"@context"`
	ID            string `json:"id"`
	Type          string `json:"type"`
	LastEventID   string `json:"lastEventID"`
	Subscriptions []any  `json:"subscriptions"`
	Next          string `json:"next,omitempty"`
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		plainError(w, http.StatusInternalServerError, "encode the document")
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	_, _ = w.Write(append(b, '\n'))
}

// parseSubsPath reads what follows /subscriptions in an escaped path.
// Draft-08 paths have a matcher type then a matcher (then a subscriber);
// draft-07 paths a topic selector (then a subscriber). A path of two
// segments is draft-08's when its first one is a matcher type. The whole
// collection is in the form of the token's draft, when both are on.
func (h *Handler) parseSubsPath(rest string, g *Grant) (subsRequest, *publishError) {
	var req subsRequest
	if rest == "" {
		switch {
		case h.cfg.Draft8 && h.cfg.Draft7 && g.Legacy:
			req.form = form7
		case h.cfg.Draft8:
			req.form = form8
		default:
			req.form = form7
		}
		return req, nil
	}
	segs := strings.Split(rest[1:], "/")
	for i, s := range segs {
		v, err := url.PathUnescape(s)
		if err != nil {
			return req, badRequest("malformed percent-encoding in the path: %q", s)
		}
		if v == "" {
			return req, &publishError{status: http.StatusNotFound, msg: "no such resource: empty path segment"}
		}
		segs[i] = v
	}
	isType := len(segs) >= 2 && (segs[0] == "exact" || segs[0] == "urlpattern")
	switch {
	case h.cfg.Draft8 && len(segs) == 3:
		if !isType {
			return req, badRequest("unknown matcher type %q: this hub knows exact and urlpattern", segs[0])
		}
		return subsRequest{form: form8, matchType: segs[0], match: segs[1], subscriber: segs[2], single: true}, nil
	case h.cfg.Draft8 && len(segs) == 2 && (isType || !h.cfg.Draft7):
		if !isType {
			return req, badRequest("unknown matcher type %q: this hub knows exact and urlpattern", segs[0])
		}
		return subsRequest{form: form8, matchType: segs[0], match: segs[1]}, nil
	case h.cfg.Draft7 && len(segs) == 2:
		return subsRequest{form: form7, match: segs[0], subscriber: segs[1], single: true}, nil
	case h.cfg.Draft7 && len(segs) == 1:
		return subsRequest{form: form7, match: segs[0]}, nil
	case h.cfg.Draft8 && len(segs) == 1:
		return req, badRequest("%q is not a matcher type followed by a matcher: use /subscriptions/{match_type}/{match}", segs[0])
	}
	return req, &publishError{status: http.StatusNotFound, msg: "no such resource in the subscriptions API"}
}
