package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestEMFILE runs a listener out of file descriptors for real, in a child
// process (this test binary again) whose descriptor limit is lowered so
// that the rest of the tests keep theirs.
//
// backoff: without the spare descriptor, accept fails with EMFILE while
// connections wait in the queue; the listener must back off instead of
// spinning, count the errors as emfile, and accept the waiting connections
// once descriptors are freed.
//
// shed: with the spare, the waiting connections are reset at once
// (counted as refused, no_fd), and a new connection is accepted once
// descriptors are freed.
func TestEMFILE(t *testing.T) {
	for _, scenario := range []string{"backoff", "shed"} {
		t.Run(scenario, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), emfileChildEnv+"="+scenario)
			out, err := cmd.CombinedOutput()
			t.Logf("child: %s", strings.TrimSpace(string(out)))
			if err != nil {
				t.Fatalf("child failed: %v", err)
			}
			if !strings.Contains(string(out), "ok "+scenario) {
				t.Fatal("child did not report success")
			}
		})
	}
}

// emfileChild is the child process's whole run.
func emfileChild() int {
	scenario := os.Getenv(emfileChildEnv)
	msg, err := runEMFILE(scenario)
	if err != nil {
		fmt.Println("FAIL", scenario+":", err)
		return 1
	}
	fmt.Println("ok", scenario+":", msg)
	return 0
}

func runEMFILE(scenario string) (string, error) {
	if scenario != "backoff" && scenario != "shed" {
		return "", fmt.Errorf("unknown scenario %q", scenario)
	}
	reg := prometheus.NewRegistry()
	l, err := Listen(context.Background(), "tcp", "127.0.0.1:0", Config{Registerer: reg, NoReserveFD: scenario == "backoff"})
	if err != nil {
		return "", err
	}
	defer l.Close()

	// Connections wait in the kernel's queue while nothing accepts.
	const waiting = 3
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for range waiting {
		c, err := net.DialTimeout("tcp", l.Addr().String(), waitFor)
		if err != nil {
			return "", err
		}
		clients = append(clients, c)
	}

	// Lower the limit and take every descriptor below it.
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return "", err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return "", err
	}
	low := uint64(len(fds) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: low, Max: lim.Max}); err != nil {
		return "", err
	}
	var pads []int
	freePads := func() {
		for _, fd := range pads {
			_ = syscall.Close(fd)
		}
		pads = nil
	}
	defer freePads()
	for {
		fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			return "", err
		}
		pads = append(pads, fd)
		if len(pads) > int(low) {
			return "", errors.New("the lowered limit does not hold")
		}
	}

	conns := make(chan net.Conn, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	defer func() {
		_ = l.Close()
		<-done
		close(conns)
		for c := range conns {
			_ = c.Close()
		}
	}()

	emfile := func() float64 { return testutil.ToFloat64(l.m.acceptErrors.WithLabelValues(kindEMFILE)) }
	if err := poll("two emfile errors", func() bool { return emfile() >= 2 }); err != nil {
		return "", err
	}
	// Backing off, accept runs a handful of times in 300 ms (5, 10, 20,
	// ... ms apart); a loop retrying at once would run it ~10^5 times. A
	// slower machine only lowers the count.
	before := l.socks[0].calls.Load()
	time.Sleep(300 * time.Millisecond)
	window := l.socks[0].calls.Load() - before
	if window > 20 {
		return "", fmt.Errorf("%d accept calls in 300 ms while out of descriptors: not backing off", window)
	}
	for _, k := range errorKinds {
		if k != kindEMFILE && testutil.ToFloat64(l.m.acceptErrors.WithLabelValues(k)) != 0 {
			return "", fmt.Errorf("accept errors of kind %s, want only emfile", k)
		}
	}
	if len(conns) != 0 {
		return "", errors.New("a connection was accepted with no descriptor free")
	}

	shed := 0.0
	if scenario == "shed" {
		// The waiting clients were reset by the shedding, not left queued.
		for i, c := range clients {
			_ = c.SetReadDeadline(time.Now().Add(waitFor))
			var b [1]byte
			if _, err := c.Read(b[:]); !errors.Is(err, syscall.ECONNRESET) {
				return "", fmt.Errorf("waiting client %d read %v, want a reset", i, err)
			}
		}
		shed = testutil.ToFloat64(l.m.refused.WithLabelValues(string(ReasonNoFD)))
		if shed != waiting {
			return "", fmt.Errorf("refused{no_fd} = %v, want %d", shed, waiting)
		}
		if qs, err := l.AcceptQueues(); err != nil || qs[0].Len != 0 {
			return "", fmt.Errorf("accept queue %v, %v after shedding; want empty", qs, err)
		}
	}

	freePads()
	want := waiting
	if scenario == "shed" {
		c, err := net.DialTimeout("tcp", l.Addr().String(), waitFor)
		if err != nil {
			return "", err
		}
		clients = append(clients, c)
		want = 1
	}
	for i := range want {
		select {
		case c := <-conns:
			_ = c.Close()
		case <-time.After(waitFor):
			return "", fmt.Errorf("only %d of %d connections accepted after descriptors were freed", i, want)
		}
	}
	if got := testutil.ToFloat64(l.m.accepted); got != float64(want) {
		return "", fmt.Errorf("accepted_total = %v, want %d", got, want)
	}
	return fmt.Sprintf("%v emfile errors, %d accept calls in a 300 ms window, %v shed, %d accepted after recovery",
		emfile(), window, shed, want), nil
}

// poll is eventually for the child, which has no testing.T.
func poll(what string, cond func() bool) error {
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}
