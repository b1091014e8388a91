package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a testing.TB that records what the helpers report instead
// of reporting it; a method it lacks panics on the nil TB it embeds,
// which fails the calling test loudly.
type recorder struct {
	testing.TB
	failed   bool
	fatal    string
	logs     []string
	cleanups []func()
}

func (r *recorder) Helper()          {}
func (r *recorder) Failed() bool     { return r.failed }
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	r.failed = true
	runtime.Goexit()
}

func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// fatalOf runs f as a test body would run (a Fatalf ends its goroutine)
// and returns the Fatalf message, "" when there was none.
func fatalOf(f func(tb testing.TB)) string {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.fatal
}

func TestBinaryMissingFails(t *testing.T) {
	got := fatalOf(func(tb testing.TB) { Binary(tb, "no-such-server-for-herald") })
	want := "no-such-server-for-herald not found: run make test (scripts/install-test-deps.sh)"
	if got != want {
		t.Fatalf("Fatalf %q, want %q", got, want)
	}
}

func TestBinaryFound(t *testing.T) {
	p := Binary(t, "sh")
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("Binary(sh) = %q: not an executable (%v)", p, err)
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports := FreePorts(t, 50)
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || p > 65535 || seen[p] {
			t.Fatalf("port %d out of range or repeated in %v", p, ports)
		}
		seen[p] = true
	}
}

func TestLogTailShownOnFailure(t *testing.T) {
	for _, failed := range []bool{false, true} {
		r := &recorder{failed: failed}
		path := filepath.Join(t.TempDir(), "server.log")
		l := NewLog(r, path)
		var b strings.Builder
		for i := 1; i <= 100; i++ {
			fmt.Fprintf(&b, "line %d\n", i)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := l.Since(int64(len("line 1\n"))); !strings.HasPrefix(got, "line 2\n") {
			t.Errorf("Since after the first line starts %.10q", got)
		}
		r.runCleanups()
		if !failed {
			if len(r.logs) != 0 {
				t.Errorf("a passing test logged %q", r.logs)
			}
			continue
		}
		if len(r.logs) != 1 {
			t.Fatalf("a failed test logged %d messages, want 1", len(r.logs))
		}
		got := r.logs[0]
		if !strings.Contains(got, "line 61\n") || !strings.HasSuffix(got, "line 100") || strings.Contains(got, "line 60\n") {
			t.Errorf("tail is not the last %d lines:\n%s", tailLines, got)
		}
	}
}

func TestProcessReapedByCleanup(t *testing.T) {
	sh := Binary(t, "sh")
	var p *Process
	t.Run("owner", func(t *testing.T) {
		l := NewLog(t, filepath.Join(t.TempDir(), "sh.log"))
		var err error
		p, err = Start(t, Cmd{Path: sh, Args: []string{"-c", "echo started; exec sleep 60"}, Log: l})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return strings.Contains(l.Since(0), "started") })
		if p.Exited() {
			t.Fatal("exited before its test ended")
		}
	})
	if !p.Exited() {
		t.Fatal("still running after its test's cleanup")
	}
}

func TestProcessWaitAndSignal(t *testing.T) {
	l := NewLog(t, filepath.Join(t.TempDir(), "sleep.log"))
	p, err := Start(t, Cmd{Path: Binary(t, "sleep"), Args: []string{"60"}, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(50 * time.Millisecond); err == nil {
		t.Fatal("Wait returned nil for a process that runs for a minute")
	}
	if p.Err() != nil {
		t.Fatalf("Err = %v before the process exited", p.Err())
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(WaitTimeout); err != nil {
		t.Fatal(err)
	}
	if p.Err() == nil || !strings.Contains(p.Err().Error(), "terminated") {
		t.Fatalf("Err = %v, want a death by SIGTERM", p.Err())
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal to an exited process: %v", err)
	}
}

// TestProcessGroupKilled starts a shell that forks a grandchild, as
// nginx's master forks workers, and checks that the grandchild dies with
// the group.
func TestProcessGroupKilled(t *testing.T) {
	sh := Binary(t, "sh")
	var grandchild int
	t.Run("owner", func(t *testing.T) {
		l := NewLog(t, filepath.Join(t.TempDir(), "sh.log"))
		_, err := Start(t, Cmd{Path: sh, Args: []string{"-c", "sleep 60 & echo pid $!; wait"}, Log: l, Group: true})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			f := strings.Fields(l.Since(0))
			if len(f) == 2 && f[0] == "pid" {
				grandchild, _ = strconv.Atoi(f[1])
			}
			return grandchild > 0
		})
		if !alive(grandchild) {
			t.Fatalf("grandchild %d is not running", grandchild)
		}
	})
	// Killed, it may linger as a zombie until init reaps it.
	waitFor(t, func() bool { return !alive(grandchild) })
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", WaitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
