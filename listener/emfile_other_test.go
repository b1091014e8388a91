//go:build !linux

package listener

// emfileChild exists on Linux only, where the test that starts it runs.
func emfileChild() int { return 2 }
