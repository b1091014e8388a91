package handlers

import (
	"context"
	"net/http/httptest"
	"testing"
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
