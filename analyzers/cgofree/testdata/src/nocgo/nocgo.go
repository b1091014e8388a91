// Package nocgo has no cgo: the analyzer has nothing to say about it.
package nocgo

import "net/http"

func health(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusNoContent)
}
