package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
)

// writeRound writes a round of frames for seqs first.. into file i of a
// fresh journal in dir and returns the file's bytes.
func writeRound(t *testing.T, path string, first uint64, recs ...string) []byte {
	t.Helper()
	j, _, err := openJournal(path, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	if err := j.restart(0); err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		j.add(first+uint64(i), []byte(r))
		if err := j.commit(); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(journalPaths(path)[0])
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func frameSeqs(fs []frame) []uint64 {
	var out []uint64
	for _, f := range fs {
		out = append(out, f.seq)
	}
	return out
}

func TestScanJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	data := writeRound(t, path, 7, "alpha", "beta", "gamma")
	_, fs := scanJournal(data)
	if got := frameSeqs(fs); !slices.Equal(got, []uint64{7, 8, 9}) {
		t.Fatalf("frames %v, want 7 8 9", got)
	}
	if string(fs[1].rec) != "beta" {
		t.Fatalf("frame 8 holds %q", fs[1].rec)
	}
	last := frameHeader + len("gamma")

	cases := []struct {
		name string
		mod  func([]byte) []byte
		want []uint64
	}{
		{"torn last frame", func(d []byte) []byte { return d[:len(d)-2] }, []uint64{7, 8}},
		{"torn last header", func(d []byte) []byte { return d[:len(d)-last+5] }, []uint64{7, 8}},
		{"flipped byte in the second frame", func(d []byte) []byte {
			d[journalHeader+frameHeader+len("alpha")+frameHeader] ^= 1
			return d
		}, []uint64{7}},
		{"zeros after the frames", func(d []byte) []byte { return append(d, make([]byte, 64)...) }, []uint64{7, 8, 9}},
		{"bad header", func(d []byte) []byte { d[2] = 'X'; return d }, nil},
		{"header cut short", func(d []byte) []byte { return d[:journalHeader-1] }, nil},
		{"empty", func([]byte) []byte { return nil }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, fs := scanJournal(tc.mod(bytes.Clone(data)))
			if got := frameSeqs(fs); !slices.Equal(got, tc.want) {
				t.Fatalf("frames %v, want %v", got, tc.want)
			}
		})
	}
}

// TestScanJournalStaleRound overwrites the start of a file with a new round:
// the frames of the old round behind it, valid under the old salt, are not
// read, even where their Seqs follow and a frame boundary lines up.
func TestScanJournalStaleRound(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "h.db")
	old := writeRound(t, path, 1, "one-one-one-one", "two-two-two-two", "three-three-three")
	// A new round with a shorter first frame whose Seq is followed by the
	// old round's second frame if the salt did not tell them apart.
	cur := writeRound(t, filepath.Join(dir, "other.db"), 1, "uno-uno-uno-uno")
	img := bytes.Clone(old)
	copy(img, cur)
	if _, fs := scanJournal(old); len(fs) != 3 {
		t.Fatalf("old round: %d frames", len(fs))
	}
	// The new frame 1 ends where the old frame 2 begins.
	_, fs := scanJournal(img)
	if got := frameSeqs(fs); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("frames %v, want only the new round's 1", got)
	}
	if string(fs[0].rec) != "uno-uno-uno-uno" {
		t.Fatalf("frame 1 holds %q", fs[0].rec)
	}
}

func TestRecoverFrames(t *testing.T) {
	run := func(first, last uint64) []frame {
		var fs []frame
		for s := first; s <= last; s++ {
			fs = append(fs, frame{seq: s})
		}
		return fs
	}
	cases := []struct {
		name    string
		files   [2][]frame
		applied uint64
		want    []uint64
		gap     bool
	}{
		{"empty", [2][]frame{}, 5, nil, false},
		{"all in the tree", [2][]frame{run(1, 4), run(5, 9)}, 9, nil, false},
		{"first file partly applied", [2][]frame{run(3, 6), nil}, 4, []uint64{5, 6}, false},
		{"two runs in order", [2][]frame{run(3, 6), run(7, 8)}, 4, []uint64{5, 6, 7, 8}, false},
		{"newer round in file 0", [2][]frame{run(7, 8), run(3, 6)}, 2, []uint64{3, 4, 5, 6, 7, 8}, false},
		{"overlapping runs", [2][]frame{run(3, 6), run(5, 8)}, 2, []uint64{3, 4, 5, 6, 7, 8}, false},
		{"gap after the tree", [2][]frame{run(6, 8), nil}, 3, nil, true},
		{"gap between runs", [2][]frame{run(3, 4), run(7, 8)}, 2, []uint64{3, 4}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := recoverFrames(tc.files, tc.applied)
			if got := frameSeqs(fs); !slices.Equal(got, tc.want) {
				t.Errorf("frames %v, want %v", got, tc.want)
			}
			if (err != nil) != tc.gap {
				t.Errorf("err = %v, want a gap: %v", err, tc.gap)
			}
		})
	}
}

// copyImage copies the history files of src into a new directory, as a
// crash would leave them: the tree as of its last commit, the journal as
// of its last sync.
func copyImage(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	paths := journalPaths(src)
	for i, p := range []string{src, paths[0], paths[1]} {
		to := []string{dst, journalPaths(dst)[0], journalPaths(dst)[1]}[i]
		in, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(to)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// holdTail keeps every append in the journal: the tree is written only at
// Close.
var holdTail = &testOptions{segment: journalSegment, applyCount: 1 << 30, applyBytes: 1 << 30, applyDelay: time.Hour}

// reopenChecked closes e, opens path again with default options and checks
// that it holds exactly want; the caller closes the engine it returns.
func reopenChecked(t *testing.T, e *Engine, path string, want []*hub.Update) *Engine {
	t.Helper()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkHistory(t, e, want)
	return e
}

// checkHistory checks that e holds exactly want, in order, by Read and
// Lookup.
func checkHistory(t *testing.T, e *Engine, want []*hub.Update) {
	t.Helper()
	got, err := readUpdates(e, 0, len(want)+10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Read returned %d updates, want %d", len(got), len(want))
	}
	earliest := make(map[string]uint64)
	for _, w := range slices.Backward(want) {
		earliest[w.ID] = w.Seq
	}
	for i, u := range got {
		w := want[i]
		if u.Seq != w.Seq || u.ID != w.ID || !bytes.Equal(u.Frame, w.Frame) {
			t.Fatalf("update %d: Seq %d id %q, want Seq %d id %q (frames equal: %v)", i, u.Seq, u.ID, w.Seq, w.ID, bytes.Equal(u.Frame, w.Frame))
		}
		if seq, ok, err := e.lookup(w.ID); err != nil || !ok || seq != earliest[w.ID] {
			t.Fatalf("Lookup(%q) = %d, %v, %v; want %d", w.ID, seq, ok, err, earliest[w.ID])
		}
	}
	if n := e.HistoryLen(); n != len(want) {
		t.Fatalf("HistoryLen() = %d, want %d", n, len(want))
	}
}

// TestJournalReplay takes the files of a running engine whose appends are
// all still in the journal, as a crash would leave them, and opens them:
// the tree gets every acknowledged update back, and Seq goes on after them.
func TestJournalReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	e, err := Open(path, Options{test: holdTail})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var want []*hub.Update
	for i := range 300 {
		u := enginetest.NewUpdate(fmt.Sprintf("urn:replay:%d", i))
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		want = append(want, u)
	}
	if e.applies.Load() != 0 {
		t.Fatalf("%d tree transactions; the test needs the appends in the journal only", e.applies.Load())
	}
	checkHistory(t, e, want)
	img := copyImage(t, path)

	r, err := Open(img, Options{test: holdTail})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.applies.Load() == 0 {
		t.Fatal("nothing replayed into the tree")
	}
	checkHistory(t, r, want)
	u := enginetest.NewUpdate("urn:replay:after")
	if err := r.Append(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if u.Seq != 301 {
		t.Fatalf("Seq after replay %d, want 301", u.Seq)
	}
}

// TestJournalRounds runs many rounds through small journal files while the
// applier writes the tree in small steps and readers read from the start:
// readers always see the history whole and in order, across tree and
// tail, the files stay small, and a crash image at any point replays to
// everything acknowledged.
func TestJournalRounds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	opts := &testOptions{segment: 2048, applyCount: 7, applyBytes: 1 << 20, applyDelay: time.Millisecond}
	e, err := Open(path, Options{test: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()

	const writers, each = 4, 150
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for ctx.Err() == nil {
				us, err := readUpdates(e, 0, 10_000)
				if err != nil {
					t.Error(err)
					return
				}
				for i, u := range us {
					if u.Seq != uint64(i+1) {
						t.Errorf("Read(0)[%d] has Seq %d: the history has a hole or a repeat", i, u.Seq)
						return
					}
				}
			}
		})
	}
	var (
		mu   sync.Mutex
		want = make([]*hub.Update, writers*each)
		wg   sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				u := enginetest.NewUpdate(fmt.Sprintf("urn:round:%d:%d", w, i))
				if err := e.Append(t.Context(), u); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[u.Seq-1] = u
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	cancel()
	readers.Wait()
	if t.Failed() {
		return
	}
	checkHistory(t, e, want)
	if e.applies.Load() < 10 {
		t.Fatalf("only %d tree transactions", e.applies.Load())
	}
	for _, p := range journalPaths(path) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// A file grows past the segment by at most the batch that crossed
		// it, and while the other file waits for the tree.
		if st.Size() > 64<<10 {
			t.Errorf("%s grew to %d bytes with a segment of %d", p, st.Size(), opts.segment)
		}
	}
	r, err := Open(copyImage(t, path), Options{test: holdTail})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkHistory(t, r, want)
}

// TestTailRetention: the tail counts in the history until it reaches the
// tree, where retention by count applies to it.
func TestTailRetention(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	opts := &testOptions{segment: journalSegment, applyCount: 4, applyBytes: 1 << 20, applyDelay: time.Hour}
	e, err := Open(path, Options{Retention: hub.Retention{MaxCount: 5}, test: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var all []*hub.Update
	add := func(ids ...string) {
		for _, id := range ids {
			u := enginetest.NewUpdate(id)
			if err := e.Append(t.Context(), u); err != nil {
				t.Fatal(err)
			}
			all = append(all, u)
		}
	}
	add("a", "b", "c", "d")
	waitFor(t, "first apply", func() bool { return e.applies.Load() == 1 })
	add("x", "e", "x")
	// The tree holds 1-4, the tail 5-7.
	checkHistory(t, e, all)
	if seq, ok, _ := e.lookup("x"); !ok || seq != 5 {
		t.Fatalf("Lookup(x) = %d, %v; want 5", seq, ok)
	}
	add("f") // the tail is due: 5-8 go to the tree, which trims to 5
	waitFor(t, "second apply", func() bool { return e.applies.Load() == 2 })
	checkHistory(t, e, all[3:])
	if seq, ok, _ := e.lookup("x"); !ok || seq != 5 {
		t.Fatalf("Lookup(x) after apply = %d, %v; want 5", seq, ok)
	}
}

func TestTail(t *testing.T) {
	var tl tail
	var batch []*request
	for i, id := range []string{"a", "x", "b", "x", "c"} {
		batch = append(batch, &request{u: &hub.Update{ID: id, Seq: uint64(i + 1)}, rec: make([]byte, 10)})
	}
	tl.add(batch[:2])
	tl.add(batch[2:])
	seqs := func(es []entry) (out []uint64) {
		for _, e := range es {
			out = append(out, e.u.Seq)
		}
		return out
	}
	if got := seqs(tl.after(0)); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("after(0) = %v", got)
	}
	if s, ok := tl.first("x"); !ok || s != 2 {
		t.Fatalf("first(x) = %d, %v; want 2", s, ok)
	}
	tl.drop(2) // a and the first x reach the tree
	if s, ok := tl.first("x"); !ok || s != 4 {
		t.Fatalf("first(x) after dropping 2 = %d, %v; want 4", s, ok)
	}
	if _, ok := tl.first("a"); ok {
		t.Fatal("a still in the tail")
	}
	for _, tc := range []struct {
		after uint64
		want  []uint64
	}{{0, []uint64{3, 4, 5}}, {3, []uint64{4, 5}}, {5, nil}, {9, nil}} {
		if got := seqs(tl.after(tc.after)); !slices.Equal(got, tc.want) {
			t.Errorf("after(%d) = %v, want %v", tc.after, got, tc.want)
		}
	}
	if tl.bytes != 30 {
		t.Errorf("bytes %d, want 30", tl.bytes)
	}
	tl.drop(3)
	if tl.entries != nil || len(tl.ids) != 0 || tl.bytes != 0 {
		t.Fatalf("after dropping all: %d entries, %d ids, %d bytes", len(tl.entries), len(tl.ids), tl.bytes)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s", what)
		}
	}
}

// FuzzScanJournal reads arbitrary bytes as a journal file: no panic, and
// what it returns is frames with consecutive Seqs that lie inside the data.
func FuzzScanJournal(f *testing.F) {
	dir := f.TempDir()
	j, _, err := openJournal(filepath.Join(dir, "h.db"), 1<<20, true)
	if err != nil {
		f.Fatal(err)
	}
	if err := j.restart(0); err != nil {
		f.Fatal(err)
	}
	for i, r := range []string{"a", "bb", "ccc"} {
		j.add(uint64(i+1), []byte(r))
	}
	if err := j.commit(); err != nil {
		f.Fatal(err)
	}
	_ = j.close()
	seed, err := os.ReadFile(journalPaths(filepath.Join(dir, "h.db"))[0])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-1])
	f.Add([]byte(journalMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, fs := scanJournal(data)
		size := journalHeader
		for i, fr := range fs {
			if i > 0 && fr.seq != fs[i-1].seq+1 {
				t.Fatalf("Seqs %d then %d", fs[i-1].seq, fr.seq)
			}
			size += frameHeader + len(fr.rec)
		}
		if len(fs) > 0 && size > len(data) {
			t.Fatalf("frames take %d bytes of %d", size, len(data))
		}
	})
}

// TestJournalFailedCommit: a commit whose sync fails may leave its frames
// on disk. They are erased before commit returns, so the file reads as if
// it had never been tried, and the next commit writes over them at the
// same place, with the same Seqs: the failed frames beyond must not be
// read after it, even where the retry repeats the failed frames' bytes
// (a publisher that retries the same update), which the chained sums
// alone would let through.
func TestJournalFailedCommit(t *testing.T) {
	for _, retry := range []string{"dddd", "bbbb"} {
		t.Run("retry "+retry, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "h.db")
			j, _, err := openJournal(path, 1<<20, false)
			if err != nil {
				t.Fatal(err)
			}
			defer j.close()
			if err := j.restart(0); err != nil {
				t.Fatal(err)
			}
			j.add(1, []byte("aaaa"))
			if err := j.commit(); err != nil {
				t.Fatal(err)
			}
			fails := 1
			j.syncData = func(f *os.File) error {
				if fails > 0 {
					fails--
					return errors.New("injected sync failure")
				}
				return fdatasync(f)
			}
			j.add(2, []byte("bbbb"))
			j.add(3, []byte("cccc"))
			if err := j.commit(); err == nil || errors.Is(err, ErrFailed) {
				t.Fatalf("commit with a failing sync returned %v, want an error that is not ErrFailed", err)
			}
			read := func() []frame {
				data, err := os.ReadFile(journalPaths(path)[0])
				if err != nil {
					t.Fatal(err)
				}
				_, fs := scanJournal(data)
				return fs
			}
			if got := frameSeqs(read()); !slices.Equal(got, []uint64{1}) {
				t.Fatalf("frames %v after the failed commit, want 1", got)
			}
			j.add(2, []byte(retry))
			if err := j.commit(); err != nil {
				t.Fatal(err)
			}
			fs := read()
			if got := frameSeqs(fs); !slices.Equal(got, []uint64{1, 2}) {
				t.Fatalf("frames %v, want 1 2: the failed frame 3 came back", got)
			}
			if string(fs[1].rec) != retry {
				t.Fatalf("frame 2 holds %q, want the retried record", fs[1].rec)
			}
		})
	}
}

// TestApplierCatchesUp: appends that arrive while the applier writes the
// tree reach it within the apply delay, not at the next threshold.
func TestApplierCatchesUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	opts := &testOptions{segment: journalSegment, applyCount: 1 << 20, applyBytes: 1 << 30, applyDelay: 5 * time.Millisecond}
	e, err := Open(path, Options{NoSync: true, test: opts})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for i := range 200 {
		if err := e.Append(t.Context(), enginetest.NewUpdate(fmt.Sprintf("urn:catch:%d", i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	waitFor(t, "the tail applied", func() bool {
		e.mu.RLock()
		defer e.mu.RUnlock()
		return len(e.tail.entries) == 0
	})
	if got := e.treeLast.Load(); got != 200 {
		t.Fatalf("tree holds up to %d, want 200", got)
	}
}
