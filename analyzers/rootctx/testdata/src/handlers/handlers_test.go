package handlers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// ---- Not reported ----

// A test roots its own context, even where a handler's request is in reach.
func TestGetUser(t *testing.T) {
	h := NewHub(nil, nil)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/users/1", nil)
	withUser(nil, nil).ServeHTTP(rec, req.WithContext(context.Background()))
	check := func(ctx context.Context) {
		h.Get(context.Background(), "1")
	}
	check(t.Context())
}

// A test helper without a *testing.T polls with a root of its own.
func storeAlive(h *Hub) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := h.store.Get(ctx, "ping")
	return err == nil
}

func waitGone(ctx context.Context, h *Hub) {
	for range 50 {
		if !storeAlive(h) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An example handler whose action must finish even when the client hangs
// up, and says so.
func exampleOrder(h *Hub) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// The order must be recorded even if the client goes away.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.store.Put(ctx, "order", r.FormValue("ref"))
	}
}
