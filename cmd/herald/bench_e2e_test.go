package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchResumeAfterCrash runs `herald bench resume` against a herald
// process with a restart command that kills the hub with SIGKILL and
// starts a new one on the same data: every acknowledged update must come
// back from the fresh process, complete and in order, from an early id, a
// late id and an unknown one.
func TestBenchResumeAfterCrash(t *testing.T) {
	work, logs := t.TempDir(), t.TempDir()
	addr := freeAddr(t)
	h := startHub(t, work, logs, addr)
	pidFile := filepath.Join(work, "restarted.pid")
	t.Cleanup(func() {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	restart := fmt.Sprintf("kill -KILL %d && while ! [ -e %q ]; do sleep 0.01; done; cd %q && exec %q --addr %s >%q 2>&1 & echo $! >%q",
		h.cmd.Process.Pid, filepath.Join(work, "killed"), work, heraldBin, addr,
		filepath.Join(logs, "restarted.log"), pidFile)
	// The test reaps the killed hub; the command waits for that before it
	// starts the new one, so the port and the database are free.
	go func() {
		<-h.done
		_ = os.WriteFile(filepath.Join(work, "killed"), nil, 0o600)
	}()

	cmd := exec.Command(heraldBin, "bench", "resume", "--hub", h.hubURL(),
		"--key", "@herald-data/dev.key", "--history", "2000", "--publishers", "8",
		"--duration", "30s", "--restart-cmd", restart, "--json")
	cmd.Dir = work
	cmd.Env = heraldEnv()
	cmd.WaitDelay = time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(logs, "restarted.log"))
		t.Fatalf("herald bench resume: %v\n%s\nrestarted hub:\n%s", err, stderr.String(), log)
	}
	if !strings.HasPrefix(exitCode(h.err), "killed by") {
		t.Fatalf("first hub ended with %s, want killed by SIGKILL", exitCode(h.err))
	}
	var r struct {
		Published  int64 `json:"published"`
		Lost       int64 `json:"lost"`
		Duplicates int64 `json:"duplicates"`
		OutOfOrder int64 `json:"out_of_order"`
		Resume     []struct {
			Name        string `json:"name"`
			OK          bool   `json:"ok"`
			Expected    int64  `json:"expected"`
			Received    int64  `json:"received"`
			ResumedFrom string `json:"resumed_from"`
		} `json:"resume"`
		Extra map[string]any `json:"extra"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("bench output is not JSON: %v\n%s", err, out)
	}
	if r.Published != 2000 {
		t.Fatalf("published %d of 2000\n%s", r.Published, out)
	}
	if _, ok := r.Extra["restart_s"]; !ok {
		t.Errorf("no restart_s in extra: %v", r.Extra)
	}
	want := map[string]int64{"early": 1999, "late": 20, "unknown": 0}
	if len(r.Resume) != 3 {
		t.Fatalf("resume cases: %s", out)
	}
	for _, c := range r.Resume {
		if !c.OK || c.Expected != want[c.Name] || c.Received != want[c.Name] {
			t.Errorf("%s after the crash: ok %v, received %d of %d (want %d)", c.Name, c.OK, c.Received, c.Expected, want[c.Name])
		}
	}
	if r.Resume[2].ResumedFrom != "earliest" {
		t.Errorf("unknown id answered %q, want earliest", r.Resume[2].ResumedFrom)
	}
	if r.Lost != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 {
		t.Errorf("lost %d, duplicates %d, out of order %d", r.Lost, r.Duplicates, r.OutOfOrder)
	}
}
