// Package console is herald's live web console, served by the hub itself
// at /console/: the nodes and their figures over the last minutes, the
// active subscriptions as they come and go, a form to publish a test
// update and a pane that subscribes and shows events as they arrive, with
// the resume cursor. Its assets are embedded in the binary and it loads
// nothing from anywhere but the hub. The page holds no secret: what it
// shows comes from the admin API and the hub, with the token the user
// gives it (or, in development mode, one the hub hands out).
package console

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Config configures the console.
type Config struct {
	// HubPath is the path of the hub endpoint, e.g. /.well-known/mercure.
	HubPath string
	// Subscriptions says whether the hub has active subscriptions.
	Subscriptions bool
	// DevToken, when set (development mode only), mints the token the
	// console uses without asking: admin, publish and subscribe on
	// everything.
	DevToken func() (string, error)
}

// Handler serves the console under /console/.
type Handler struct {
	cfg   Config
	files http.Handler
}

// New returns the console's handler.
func New(cfg Config) *Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return &Handler{cfg: cfg, files: http.StripPrefix("/console/", http.FileServerFS(sub))}
}

// ServeHTTP serves the page, its assets, its settings (config.json) and,
// in development mode, its token (token).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// The page runs only what it was built with, and talks only to its
	// own origin.
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "the console is read with GET", http.StatusMethodNotAllowed)
		return
	}
	switch strings.TrimPrefix(r.URL.Path, "/console/") {
	case "config.json":
		hd.Set("Cache-Control", "no-store")
		hd.Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"hub": h.cfg.HubPath, "subscriptions": h.cfg.Subscriptions, "dev": h.cfg.DevToken != nil,
		})
		return
	case "token":
		if h.cfg.DevToken == nil {
			http.Error(w, "the console hands out tokens in development mode only: paste a token made with herald token --admin --publish '*' --subscribe '*'", http.StatusNotFound)
			return
		}
		tok, err := h.cfg.DevToken()
		if err != nil {
			http.Error(w, "mint a token: "+err.Error(), http.StatusInternalServerError)
			return
		}
		hd.Set("Cache-Control", "no-store")
		hd.Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
		return
	}
	hd.Set("Cache-Control", "no-cache")
	h.files.ServeHTTP(w, r)
}
