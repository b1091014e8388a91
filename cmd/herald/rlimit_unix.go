//go:build unix

package main

import "syscall"

// fdLimit returns the soft open-files limit, which the Go runtime raised
// to the hard limit at start-up; 0 when it cannot be read.
func fdLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return uint64(r.Cur) //nolint:unconvert // int64 on some platforms
}
