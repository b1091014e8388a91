package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/enginetest"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// when the test ends. It needs root, which the tests have in CI.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("mount a tmpfs of %d bytes on %s (the test needs root): %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestNoSpace fills a small file system until the journal cannot grow:
// the appends that do not fit are refused with ENOSPC, the engine goes on
// (the erasure needs no new block), a crash image then holds exactly the
// acknowledged updates, and once space is freed appends succeed again and
// a reopen holds every acknowledged one.
func TestNoSpace(t *testing.T) {
	dir := mountTmpfs(t, 2<<20)
	// Space to free later, so the engine can be seen to recover: enough
	// for the tree to take what the journal holds. The pads are freed one
	// at a time while the test waits for a failed write that put whole
	// frames in the file.
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 5<<18), 0o600); err != nil {
		t.Fatal(err)
	}
	var pads []string
	for i := range 8 {
		pads = append(pads, filepath.Join(dir, fmt.Sprintf("pad%d", i)))
		if err := os.WriteFile(pads[i], make([]byte, 16<<10), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "herald.db")
	// The journal's writes go to the file as they are; the hook only
	// watches the failed ones, to tell whether one of them put whole
	// frames in the file: those are what the erasure must remove.
	//
	// When gate is set, the first commit of a round waits until the
	// round's other appends are all waiting for the writer, so that the
	// next commit takes them at once: a write of many frames.
	const batch = 16
	var (
		mu     sync.Mutex
		landed int // most whole frames a failed commit left in the file
		gate   atomic.Bool
		eng    atomic.Pointer[Engine]
	)
	watch := func(f *os.File, b []byte, off int64) (int, error) {
		if gate.CompareAndSwap(true, false) {
			taken := wholeFrames(b, off == 0)
			for deadline := time.Now().Add(time.Second); eng.Load().coming.Load() < int64(batch-taken) && time.Now().Before(deadline); {
				time.Sleep(50 * time.Microsecond)
			}
		}
		n, err := f.WriteAt(b, off)
		if err != nil && !allZero(b) {
			// The file's size says what landed: WriteAt's count leaves
			// out what a pwrite wrote before the next one failed.
			st, serr := f.Stat()
			if serr != nil {
				t.Error(serr)
				return n, err
			}
			in := min(max(st.Size()-off, 0), int64(len(b)))
			mu.Lock()
			landed = max(landed, wholeFrames(b[:in], off == 0))
			mu.Unlock()
		}
		return n, err
	}
	e, err := Open(path, Options{test: &testOptions{writeAt: watch}})
	if err != nil {
		t.Fatal(err)
	}
	eng.Store(e)
	defer func() {
		if e != nil {
			_ = e.Close()
		}
	}()
	var (
		l       ledger
		noSpace int
	)
	// Small records in concurrent batches, so that a write cut short at
	// a page boundary holds whole frames.
	frame := []byte(strings.Repeat("x", 600))
	whole := func() int {
		mu.Lock()
		defer mu.Unlock()
		return landed
	}
	for i := 0; noSpace < 5 || whole() == 0; i++ {
		if i == 2000 {
			t.Fatalf("%d rounds of appends in a 2 MiB file system: %d refused with ENOSPC, at most %d whole frames left by a failed commit", i, noSpace, whole())
		}
		us := updates(fmt.Sprintf("fill%d", i), batch)
		for _, u := range us {
			u.Frame = frame
		}
		gate.Store(true)
		errs := appendAll(t, e, us)
		gate.Store(false)
		l.take(t, us, errs)
		full := false
		for _, err := range errs {
			switch {
			case errors.Is(err, syscall.ENOSPC):
				noSpace++
				full = true
			case err != nil:
				t.Fatalf("append: %v, want nil or ENOSPC", err)
			}
		}
		if full && whole() == 0 && len(pads) > 0 {
			if err := os.Remove(pads[0]); err != nil {
				t.Fatal(err)
			}
			pads = pads[1:]
		}
	}
	if e.stopErr() != nil {
		t.Fatalf("stopped on a full disk: %v", e.stopErr())
	}
	checkHistory(t, e, l.acked)
	img := copyImageQuiet(t, e, path)
	r, err := Open(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkHistory(t, r, l.acked)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	us := updates("after", 3)
	errs := appendAll(t, e, us)
	for _, err := range errs {
		if err != nil {
			t.Fatalf("append after space was freed: %v", err)
		}
	}
	l.take(t, us, errs)
	checkHistory(t, e, l.acked)
	e = reopenChecked(t, e, path, l.acked)
	if err := e.Append(t.Context(), enginetest.NewUpdate("urn:last")); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d acknowledged, %d refused with ENOSPC, up to %d whole frames erased", len(l.acked), noSpace, whole())
}

// wholeFrames counts the complete frames at the start of b, a write at a
// frame boundary, or at the start of a file (after the round's header).
func wholeFrames(b []byte, atStart bool) int {
	if atStart {
		if len(b) < journalHeader {
			return 0
		}
		b = b[journalHeader:]
	}
	n := 0
	for len(b) >= frameHeader {
		size := frameHeader + int(binary.LittleEndian.Uint32(b))
		if size > len(b) {
			break
		}
		b = b[size:]
		n++
	}
	return n
}
