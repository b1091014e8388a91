//go:build !linux

package proctest

import "syscall"

// sysProcAttr puts the child in its own group when asked; without
// Linux's Pdeathsig, a test binary that dies leaves its servers behind.
func sysProcAttr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: group}
}
