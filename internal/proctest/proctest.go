// Package proctest runs the external servers herald's tests need (Redis,
// Sentinel, nginx) as child processes owned by one test: each is reaped by
// the test's cleanup, its output goes to a log file whose tail is shown
// when the test fails, and a test binary that dies takes them with it.
package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// WaitTimeout bounds every wait for a process to exit, so a server that
// ignores its signal fails the test instead of hanging it.
const WaitTimeout = 10 * time.Second

// tailLines is how much of a log a failed test shows: enough for a
// server's start-up banner and its last errors.
const tailLines = 40

// Binary returns the path of the program name, searched in PATH and then
// in the sbin directories a non-root PATH lacks (nginx lives there). A
// missing program fails the test rather than skipping it: make test
// installs these servers, and a skip would hide a machine that cannot run
// the tests at all.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s not found: run make test (scripts/install-test-deps.sh)", name)
	return ""
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
// The listeners are held until all n are found, so the kernel cannot hand
// out one port twice; another process may still take a port before the
// server binds it, which is why the callers retry on "address in use".
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// AddrInUse reports whether a server's log says it could not bind its
// port, the one start-up failure worth retrying on another port.
func AddrInUse(log string) bool {
	return strings.Contains(log, "Address already in use") || strings.Contains(log, "address already in use")
}

// Log is a file that collects a server's output across its restarts.
type Log struct {
	path string
}

// NewLog creates the log file at path and, when the test fails, shows its
// last lines. Create it before starting the process that writes it, so
// that the tail is printed after the process has been stopped.
func NewLog(t testing.TB, path string) *Log {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatalf("create log: %v", err)
	}
	_ = f.Close()
	l := &Log{path: path}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", path, l.Tail(tailLines))
		}
	})
	return l
}

// Path returns the log file's path.
func (l *Log) Path() string { return l.path }

// Size returns the log's current length, a mark for Since.
func (l *Log) Size() int64 {
	fi, err := os.Stat(l.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Since returns what was written after the mark taken with Size.
func (l *Log) Since(mark int64) string {
	b, err := os.ReadFile(l.path)
	if err != nil || mark > int64(len(b)) {
		return ""
	}
	return string(b[mark:])
}

// Tail returns the log's last n lines.
func (l *Log) Tail(n int) string {
	b, err := os.ReadFile(l.path)
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	b = bytes.TrimRight(b, "\n")
	for i, cut := len(b)-1, 0; i >= 0; i-- {
		if b[i] == '\n' {
			if cut++; cut == n {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}

// Cmd describes a process to start.
type Cmd struct {
	Path string
	Args []string
	// Log receives the process's stdout and stderr.
	Log *Log
	// Group puts the process in a process group of its own, which Kill
	// ends as a whole: nginx's master forks workers that would outlive a
	// killed master.
	Group bool
}

// Process is a started child process. The goroutine that waits for it
// ends when the process does, and the test's cleanup kills the process and
// waits for that.
type Process struct {
	cmd   *exec.Cmd
	group bool
	done  chan struct{}
	err   error // cmd.Wait's result, written before done is closed
}

// Start starts c and registers a cleanup that kills it and waits for it to
// be reaped.
func Start(t testing.TB, c Cmd) (*Process, error) {
	t.Helper()
	out, err := os.OpenFile(c.Log.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	// The child holds its own copy of the descriptor, so no goroutine
	// copies output and closing ours at once is right.
	defer func() { _ = out.Close() }()
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr(c.Group)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(c.Path), err)
	}
	p := &Process{cmd: cmd, group: c.Group, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if err := p.Wait(WaitTimeout); err != nil {
			t.Errorf("%s: %v", filepath.Base(c.Path), err)
		}
	})
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns how the process ended; it is nil until Exited.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Signal sends sig to the process alone; a process that has already
// exited is not an error.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	return nil
}

// Kill sends SIGKILL to the process, and to its whole group when it was
// started with Group. It does not wait.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	if p.group {
		// The group id is the leader's pid, which cannot be reused
		// before the leader is reaped.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		return
	}
	_ = p.cmd.Process.Kill()
}

// Wait waits up to d for the process to exit and be reaped.
func (p *Process) Wait(d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		return fmt.Errorf("pid %d still running after %v", p.Pid(), d)
	}
}
