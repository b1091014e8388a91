package mercure

import (
	"errors"
	"net/http"
	"strings"
)

// tokenSource says where a request carried its token.
type tokenSource uint8

const (
	fromNone tokenSource = iota
	fromHeader
	fromQuery
	fromCookie
)

// bearer finds the request's token: the Authorization header wins, then
// (draft-07) the authorization query parameter, then the draft-08 cookie,
// then the draft-07 cookie. Cookies are ambient credentials, so their
// presence beside a header is not an error.
func (h *Handler) bearer(r *http.Request, query []field) (string, tokenSource, *TokenError) {
	if vals := r.Header.Values("Authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return "", fromHeader, &TokenError{Code: "invalid_request", Status: http.StatusBadRequest, Description: "more than one Authorization header"}
		}
		scheme, tok, ok := strings.Cut(vals[0], " ")
		tok = strings.TrimLeft(tok, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.IndexByte(tok, ' ') >= 0 || strings.IndexByte(tok, '\t') >= 0 {
			return "", fromHeader, &TokenError{Code: "invalid_request", Status: http.StatusBadRequest, Description: `Authorization header must be "Bearer <token>"`}
		}
		return tok, fromHeader, nil
	}
	if h.cfg.Draft7 {
		for _, f := range query {
			if f.name == "authorization" {
				return f.value, fromQuery, nil
			}
		}
	}
	if h.cfg.Draft8 {
		if c, err := r.Cookie(CookieDraft8); err == nil && c.Value != "" {
			return c.Value, fromCookie, nil
		}
	}
	if h.cfg.Draft7 {
		if c, err := r.Cookie(CookieDraft7); err == nil && c.Value != "" {
			return c.Value, fromCookie, nil
		}
	}
	return "", fromNone, nil
}

// authenticate returns the grant of the request's token, nil when it
// carries none, or writes the error response and returns ok=false.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request, query []field, action Action, span reqSpan) (g *Grant, src tokenSource, ok bool) {
	raw, src, terr := h.bearer(r, query)
	if terr != nil {
		h.challenge(w, span, terr.Status, terr.Code, terr.Description)
		return nil, src, false
	}
	if src == fromNone {
		return nil, src, true
	}
	g, err := h.tokens.Validate(raw, action)
	if err != nil {
		var te *TokenError
		if !errors.As(err, &te) {
			te = &TokenError{Code: "invalid_token", Status: http.StatusUnauthorized, Description: "invalid token"}
		}
		h.challenge(w, span, te.Status, te.Code, te.Description)
		return nil, src, false
	}
	return g, src, true
}

// challenge writes a WWW-Authenticate: Bearer challenge (RFC 6750) with
// the protected resource metadata pointer (RFC 9728) and the status, and
// records the refusal on span. An empty code is the "no token presented"
// challenge, which carries no error.
func (h *Handler) challenge(w http.ResponseWriter, span reqSpan, status int, code, desc string) {
	var b strings.Builder
	b.WriteString("Bearer")
	sep := " "
	if h.cfg.Draft8 {
		b.WriteString(` resource_metadata="`)
		b.WriteString(h.metaURL)
		b.WriteString(`"`)
		sep = ", "
	}
	if code != "" {
		b.WriteString(sep + `error="` + code + `"`)
		if desc != "" {
			b.WriteString(`, error_description="` + quoteSafe(desc) + `"`)
		}
	}
	w.Header().Set("WWW-Authenticate", b.String())
	msg := desc
	if msg == "" {
		msg = http.StatusText(status)
	}
	span.plainError(w, status, msg)
}

// quoteSafe keeps an error description inside its quoted-string: RFC 6750
// allows printable ASCII except '"' and '\'.
func quoteSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '\''
		}
	}
	return string(b)
}
