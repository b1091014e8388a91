package enginetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-hub/herald/hub"
)

// crashDirEnv, set in the environment of the re-executed test binary, names
// the directory of the engine the child appends to.
const crashDirEnv = "HERALD_ENGINETEST_CRASH_DIR"

const crashWriters = 4

// RunCrash checks that every update whose Append returned nil survives the
// process being killed (SIGKILL) in the middle of appends.
//
// It re-executes the test binary to run only the calling test, in which
// RunCrash plays the child: the child appends from several goroutines and
// prints each acknowledged Seq and ID; the parent kills it after a few
// hundred acknowledgements, reopens the engine on the same dir, and checks
// that every acknowledged update is there, in order and intact, and that
// Seq goes on after the last one. So the calling test must do nothing before
// RunCrash that it would not want done twice:
//
//	func TestCrash(t *testing.T) { enginetest.RunCrash(t, open) }
func RunCrash(t *testing.T, open Factory) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(t, open, dir)
		return
	}
	if testing.Short() {
		t.Skip("crash test re-executes the test binary")
	}

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run="+runPattern(t.Name()), "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	acks := make(map[string]uint64)
	r := bufio.NewReader(stdout)
	target := 300 + rand.IntN(300)
	for len(acks) < target {
		line, err := r.ReadString('\n')
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child ended after %d acknowledgements: %v\nstdout: %s\nstderr:\n%s", len(acks), err, line, stderr.Bytes())
		}
		parseAck(t, line, acks)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	// What the child printed before it died was acknowledged too; a last
	// line cut short by the kill is not an acknowledgement.
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		parseAck(t, line, acks)
	}
	_ = cmd.Wait()
	t.Logf("child killed after %d acknowledged appends", len(acks))

	in := (&suite{open: open, opts: Options{Timeout: 30 * time.Second}}).start(t, dir, hub.Retention{})
	all := in.readAll(0)
	stored := make(map[string]*hub.Update, len(all))
	for i, u := range all {
		// Nothing was retained away: every position from 1 is there.
		if u.Seq != uint64(i+1) {
			t.Fatalf("record %d has Seq %d, want %d", i, u.Seq, i+1)
		}
		want := NewUpdate(u.ID)
		want.Seq, want.Time = u.Seq, u.Time
		if d := diff(u, want); d != "" {
			t.Fatalf("record %d is not what was appended: %s", i, d)
		}
		stored[u.ID] = u
	}
	for id, seq := range acks {
		u, ok := stored[id]
		if !ok {
			t.Errorf("acknowledged update %q (Seq %d) lost", id, seq)
			continue
		}
		if u.Seq != seq {
			t.Errorf("acknowledged update %q has Seq %d, acknowledged as %d", id, u.Seq, seq)
		}
		if got, ok := in.lookup(id); !ok || got != seq {
			t.Errorf("Lookup(%q) = %d, %v; want %d", id, got, ok, seq)
		}
	}
	// Each writer appended one update at a time, so what it stored is a
	// prefix of its sequence, in Seq order.
	next := make([]int, crashWriters)
	for _, u := range all {
		var w, i int
		if _, err := fmt.Sscanf(u.ID, "crash-%d-%d", &w, &i); err != nil || w < 0 || w >= crashWriters {
			t.Fatalf("unexpected id %q", u.ID)
		}
		if i != next[w] {
			t.Fatalf("writer %d: stored %q after %d updates", w, u.ID, next[w])
		}
		next[w]++
	}
	u := in.append(NewUpdate("after-crash"))
	if want := uint64(len(all) + 1); u.Seq != want {
		t.Errorf("after the crash, Append got Seq %d, want %d", u.Seq, want)
	}
}

func parseAck(t *testing.T, line string, acks map[string]uint64) {
	t.Helper()
	var seq uint64
	var id string
	if !strings.HasPrefix(line, "ack ") {
		return // test framework output
	}
	if _, err := fmt.Sscanf(line, "ack %d %s\n", &seq, &id); err != nil {
		t.Fatalf("bad acknowledgement %q: %v", line, err)
	}
	if prev, ok := acks[id]; ok {
		t.Fatalf("%q acknowledged twice, as %d and %d", id, prev, seq)
	}
	acks[id] = seq
}

// runPattern matches exactly the test named name with -test.run.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// crashChild appends until it is killed, printing every acknowledgement.
// It gives up after a minute, so an orphan does not run forever; a parent
// that dies closes the pipe, and the next print ends the child.
func crashChild(t *testing.T, open Factory, dir string) {
	e := open(t, dir, hub.Retention{})
	if _, err := e.Listen(func(hub.Batch) {}); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for w := range crashWriters {
		wg.Go(func() {
			line := make([]byte, 0, 64)
			for i := 0; ctx.Err() == nil; i++ {
				u := NewUpdate(fmt.Sprintf("crash-%d-%d", w, i))
				if err := e.Append(ctx, u); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				line = fmt.Appendf(line[:0], "ack %d %s\n", u.Seq, u.ID)
				mu.Lock()
				_, err := os.Stdout.Write(line)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if c, ok := e.(hub.Closer); ok {
		_ = c.Close()
	}
	t.Error("crash child was not killed")
}
