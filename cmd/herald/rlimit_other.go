//go:build !unix

package main

// fdLimit is unknown here: --max-connections auto sets no limit.
func fdLimit() uint64 { return 0 }
