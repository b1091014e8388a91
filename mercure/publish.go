package mercure

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herald-hub/herald/hub"
)

// publishError is a rejected publication: its status and message.
type publishError struct {
	status int
	msg    string
}

func (e *publishError) Error() string { return e.msg }

func badRequest(format string, a ...any) *publishError {
	return &publishError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

func tooLarge(format string, a ...any) *publishError {
	return &publishError{http.StatusRequestEntityTooLarge, fmt.Sprintf(format, a...)}
}

// The answers to forms with too many fields; built once, not per request.
var (
	errPublishFields   = &publishError{http.StatusRequestEntityTooLarge, "form has too many fields"}
	errSubscribeFields = &publishError{http.StatusBadRequest, "too many parameters in the body"}
)

// publish handles POST: parse, authenticate, validate, authorize, then
// store durably and answer the id. Nothing is stored unless every check
// passed.
func (h *Handler) publish(w http.ResponseWriter, r *http.Request) {
	var span reqSpan
	if h.cfg.Tracer != nil {
		r, span = h.startSpan(r, spanPublish)
		defer span.end()
	}
	query, err := parseForm(r.URL.RawQuery, h.cfg.MaxMatchers*2+16)
	if err != nil {
		span.plainError(w, http.StatusBadRequest, "query string has too many parameters")
		return
	}
	form, perr := h.readForm(w, r, 4*h.cfg.MaxTopics+64, errPublishFields)
	if perr != nil {
		span.plainError(w, perr.status, perr.msg)
		return
	}
	span.event("body read")
	grant, src, ok := h.authenticate(w, r, query, ActionPublish, span)
	if !ok {
		return
	}
	if grant == nil {
		h.challenge(w, span, http.StatusUnauthorized, "", "a publisher token is required")
		return
	}
	span.event("token validated")
	if h.limits.pub != nil {
		// Counted before the update is checked: a publisher that floods
		// the hub with updates it then refuses costs it as much.
		if ok, retry := h.limits.pub.allow(h.publisherKey(grant, r), time.Now()); !ok {
			h.limits.limited.Inc()
			span.refuse(http.StatusTooManyRequests, "publish rate over the limit")
			tooManyRequests(w, retry)
			return
		}
	}
	msg, perr := h.parseUpdate(form)
	if perr != nil {
		span.plainError(w, perr.status, perr.msg)
		return
	}
	span.update(len(msg.Topics), msg.Private)
	span.event("update parsed")
	if !grant.CanPublish(msg.Topics) {
		h.challenge(w, span, http.StatusForbidden, "insufficient_scope", "token does not grant publish on every topic of the update")
		return
	}
	if src == fromCookie && !h.sameOrigin(r) {
		span.plainError(w, http.StatusForbidden, "cookie-authenticated publish needs an Origin or Referer from the hub's origin or an allowed origin")
		return
	}
	span.event("authorized")
	u, err := h.hub.Publish(r.Context(), msg)
	if err != nil {
		if errors.Is(err, hub.ErrShutdown) {
			span.plainError(w, http.StatusServiceUnavailable, "hub is shutting down; retry on another node or later")
			return
		}
		if r.Context().Err() != nil {
			span.fail(0, err) // the publisher left before the update was stored
			return
		}
		h.log.Error("publish failed", "err", err)
		span.fail(http.StatusServiceUnavailable, err)
		plainError(w, http.StatusServiceUnavailable, "update could not be stored; it was not published")
		return
	}
	span.published(u.ID)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, u.ID)
}

const formType = "application/x-www-form-urlencoded"

// readForm reads an application/x-www-form-urlencoded body of at most
// maxFields pairs, within the size and time limits; tooMany is the answer
// when there are more.
func (h *Handler) readForm(w http.ResponseWriter, r *http.Request, maxFields int, tooMany *publishError) ([]field, *publishError) {
	// The exact type, as every form encoder sends it, skips the parser.
	if ct := r.Header.Get("Content-Type"); ct != formType {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != formType {
			return nil, &publishError{http.StatusUnsupportedMediaType, "body must be application/x-www-form-urlencoded"}
		}
	}
	body, perr := h.readBody(w, r)
	if perr != nil {
		return nil, perr
	}
	form, err := parseForm(string(body), maxFields)
	if err != nil {
		return nil, tooMany
	}
	return form, nil
}

// readBody reads a request body within the size limit and BodyTimeout, so
// a client trickling bytes cannot hold a handler. The read deadline is
// lifted afterwards: a QUERY subscription goes on streaming on the same
// connection.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *publishError) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(h.cfg.BodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge("body is larger than %d bytes", h.cfg.MaxBodyBytes)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, &publishError{http.StatusRequestTimeout, "body not received in time"}
		}
		return nil, badRequest("could not read body: %v", err)
	}
	return body, nil
}

// parseUpdate turns a publish form into a hub.Message, enforcing every
// rule of the draft's Publication section. Unknown fields are ignored.
func (h *Handler) parseUpdate(form []field) (hub.Message, *publishError) {
	var m hub.Message
	var seen struct{ id, typ, retry, data bool }
	for _, f := range form {
		switch f.name {
		case "topic":
			if len(m.Topics) == h.cfg.MaxTopics {
				return m, tooLarge("more than %d topics", h.cfg.MaxTopics)
			}
			if err := h.checkTopic(f.value); err != nil {
				return m, err
			}
			m.Topics = append(m.Topics, f.value)
		case "data":
			if seen.data {
				continue // the first value wins
			}
			if !utf8.ValidString(f.value) {
				return m, badRequest("data is not valid UTF-8")
			}
			m.Data, seen.data = f.value, true
		case "private":
			m.Private = true
		case "id":
			if seen.id {
				continue
			}
			if err := h.checkField("id", f.value); err != nil {
				return m, err
			}
			switch {
			case strings.HasPrefix(f.value, "#"):
				return m, badRequest("id must not start with #: such ids are reserved for the hub")
			case f.value == hub.EarliestID:
				return m, badRequest("id must not be %q: the value is reserved", hub.EarliestID)
			}
			m.ID, seen.id = f.value, true
		case "type":
			if seen.typ {
				continue
			}
			if err := h.checkField("type", f.value); err != nil {
				return m, err
			}
			if f.value == "mercure" {
				return m, badRequest(`type "mercure" is reserved for events the hub generates`)
			}
			m.Type, seen.typ = f.value, true
		case "retry":
			if seen.retry {
				continue
			}
			if f.value == "" || len(f.value) > 10 || strings.Trim(f.value, "0123456789") != "" {
				return m, badRequest("retry must be ASCII digits (milliseconds)")
			}
			m.Retry, seen.retry = f.value, true
		}
	}
	if len(m.Topics) == 0 {
		return m, badRequest("missing topic: an update needs at least one topic field")
	}
	return m, nil
}

// checkField applies the length and character rules shared by topics, ids
// and types.
func (h *Handler) checkField(name, v string) *publishError {
	if len(v) > h.cfg.MaxFieldBytes {
		return tooLarge("%s is longer than %d bytes", name, h.cfg.MaxFieldBytes)
	}
	if v == "" {
		return badRequest("%s must not be empty", name)
	}
	if !hub.ValidText(v) {
		return badRequest("%s contains invalid UTF-8, control characters (CR, LF, NUL...) or format characters", name)
	}
	return nil
}

func (h *Handler) checkTopic(t string) *publishError {
	if err := h.checkField("topic", t); err != nil {
		return err
	}
	if t == hub.Wildcard {
		return badRequest(`topic "*" is reserved for the wildcard matcher`)
	}
	if h.reserved(t) {
		return badRequest("topic %q is in the hub's reserved namespace %s", t, h.cfg.PublicURL.Path)
	}
	return nil
}

// reserved reports whether topic, resolved against the hub URL with the
// WHATWG URL parser, names the hub's own path or anything below it, after
// dot segments are removed and percent-encoded unreserved characters are
// decoded, so that no spelling of the path slips through.
func (h *Handler) reserved(topic string) bool {
	// Fast path: parsing cannot make up letters. A topic that holds no
	// percent-escape and not the last segment of the hub path cannot
	// resolve into that path, unless it is a reference that keeps the
	// base path whole (one that starts with "?" or "#").
	if h.hubSeg != "" && topic[0] != '?' && topic[0] != '#' &&
		!strings.Contains(topic, h.hubSeg) && strings.IndexByte(topic, '%') < 0 {
		return false
	}
	u, err := h.baseURL.Parse(topic)
	if err != nil {
		return false
	}
	p := removeDots(decodeUnreserved(u.Pathname()))
	hp := removeDots(decodeUnreserved(h.cfg.PublicURL.EscapedPath()))
	if hp == "" {
		hp = "/"
	}
	if hp != "/" {
		hp = strings.TrimSuffix(hp, "/")
	}
	// The draft's rule, literally: the hub path itself, or that path
	// followed by "/" (for a hub at the root: "/" and "//...").
	return p == hp || strings.HasPrefix(p, hp+"/")
}

// decodeUnreserved decodes %XX sequences that stand for unreserved
// characters (RFC 3986: ALPHA DIGIT - . _ ~) and leaves the others.
func decodeUnreserved(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			c := unhex(s[i+1])<<4 | unhex(s[i+2])
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
				b = append(b, c)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

// removeDots removes "." and ".." segments (RFC 3986 section 5.2.4).
func removeDots(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		switch s {
		case ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return strings.Join(out, "/")
}
