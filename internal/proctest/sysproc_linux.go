package proctest

import "syscall"

// sysProcAttr asks the kernel to kill the child when the test binary dies
// (a timeout panic, a SIGKILL), so no server outlives its test.
// Pdeathsig fires when the forking thread exits; Go keeps its threads for
// the life of the process unless a locked goroutine ends, which the test
// binaries do not do.
func sysProcAttr(group bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: group}
}
