package mercure

import (
	"net/http"
	"strings"
)

// cors adds the CORS response headers for an allowed Origin. With an
// explicit allowlist the origin is echoed with credentials allowed; with
// "*" any origin may read, without credentials, as the Fetch standard
// requires. Arbitrary origins are never reflected.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	if len(h.origins) > 0 || h.anyOrig {
		// Always, so that a shared cache never serves a response made
		// for one origin (or for none) to another.
		hd.Add("Vary", "Origin")
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	switch {
	case h.origins[origin]:
		hd.Set("Access-Control-Allow-Origin", origin)
		hd.Set("Access-Control-Allow-Credentials", "true")
	case h.anyOrig:
		hd.Set("Access-Control-Allow-Origin", "*")
	default:
		return
	}
	hd.Set("Access-Control-Expose-Headers", "Mercure-Last-Event-ID, Last-Event-ID, Link, WWW-Authenticate")
}

// preflight answers a CORS preflight request.
func (h *Handler) preflight(w http.ResponseWriter, r *http.Request) {
	if w.Header().Get("Access-Control-Allow-Origin") != "" {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Methods", "GET, QUERY, POST, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, Cache-Control")
		hd.Set("Access-Control-Max-Age", "600")
	}
	w.Header().Set("Allow", "GET, QUERY, POST, OPTIONS")
	w.WriteHeader(http.StatusNoContent)
}

// sameOrigin reports whether a cookie-authenticated publish comes from a
// page the hub trusts: its Origin (or, failing that, Referer) is the hub's
// own origin or one of the allowlisted origins. This is the CSRF defence
// the draft asks for when cookies can authorize publishing.
func (h *Handler) sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" {
		ref := r.Header.Get("Referer")
		if ref == "" {
			return false
		}
		// scheme://host[:port] of the referer
		if i := strings.Index(ref, "://"); i >= 0 {
			if j := strings.IndexByte(ref[i+3:], '/'); j >= 0 {
				ref = ref[:i+3+j]
			}
		}
		src = ref
	}
	own := h.cfg.PublicURL.Scheme + "://" + h.cfg.PublicURL.Host
	return strings.EqualFold(src, own) || h.origins[src]
}
