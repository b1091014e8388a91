//go:build !unix

package bench

// fdLimit is unknown off Unix.
func fdLimit() uint64 { return 0 }
