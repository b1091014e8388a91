package bolt

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the randomized fault tests (0: from the clock)")

// seed returns the seed of a randomized test and prints it, so that a
// failure can be replayed with -seed.
func seed(t *testing.T) uint64 {
	t.Helper()
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -seed=%d)", s, s)
	return s
}

// fault is what the next journal commit, or the erasure after it, meets.
type fault int

const (
	faultNone    fault = iota
	faultSync          // the write lands in full, then the sync fails
	faultShort         // part of the write lands, then it fails
	faultNoSpace       // part of the write lands, then it fails with ENOSPC
	faultWrite         // nothing lands, the write fails
)

func (f fault) String() string {
	return [...]string{"none", "sync", "short", "nospace", "write"}[f]
}

var errInjected = errors.New("injected fault")

// injector fails the journal's writes and syncs on demand. arm sets the
// fault the next commit (a write of frames) meets and the one the erasure
// after it (a write of zeros) meets; each fires once.
type injector struct {
	mu       sync.Mutex
	rng      *rand.Rand
	commit   fault
	erase    fault
	failSync bool // the next sync fails
	fired    int  // faults that fired
	// landsOne makes a short write put one byte in the file at least,
	// so that there is something to erase.
	landsOne bool
}

func newInjector(seed uint64) *injector {
	return &injector{rng: rand.New(rand.NewPCG(seed, 1))}
}

func (in *injector) arm(commit, erase fault) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.commit, in.erase, in.failSync = commit, erase, false
}

func (in *injector) firedCount() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.fired
}

func (in *injector) writeAt(f *os.File, b []byte, off int64) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	armed := &in.commit
	if allZero(b) {
		armed = &in.erase
	}
	fl := *armed
	*armed = faultNone
	if fl != faultNone {
		in.fired++
	}
	switch fl {
	case faultSync:
		n, err := f.WriteAt(b, off)
		in.failSync = err == nil
		return n, err
	case faultShort, faultNoSpace:
		least := 0
		if in.landsOne {
			least = min(1, len(b)-1) // short still: not all of b
		}
		n, err := f.WriteAt(b[:least+in.rng.IntN(len(b)-least)], off)
		if err != nil {
			return n, err
		}
		if fl == faultNoSpace {
			return n, syscall.ENOSPC
		}
		return n, errInjected
	case faultWrite:
		return 0, errInjected
	}
	return f.WriteAt(b, off)
}

func (in *injector) sync(f *os.File) error {
	in.mu.Lock()
	fail := in.failSync
	in.failSync = false
	in.mu.Unlock()
	if fail {
		return errInjected
	}
	return fdatasync(f)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// appendAll appends us concurrently, so that they tend to share a commit,
// and returns each one's error.
func appendAll(t *testing.T, e *Engine, us []*hub.Update) []error {
	t.Helper()
	errs := make([]error, len(us))
	var wg sync.WaitGroup
	for i, u := range us {
		wg.Go(func() { errs[i] = e.Append(t.Context(), u) })
	}
	wg.Wait()
	return errs
}

// ledger is what a test expects a history to hold: every acknowledged
// update, in Seq order.
type ledger struct {
	acked []*hub.Update
	// refused counts the refusals seen, so a test can tell it refused
	// something at all.
	refused int
}

// take records the outcome of appending us: the acknowledged ones join
// the ledger, the refused ones must have no Seq. Seqs stay gapless: a
// refused append's Seq goes to the next one.
func (l *ledger) take(t *testing.T, us []*hub.Update, errs []error) {
	t.Helper()
	var ok []*hub.Update
	for i, u := range us {
		if errs[i] != nil {
			l.refused++
			if u.Seq != 0 {
				t.Fatalf("refused append of %s has Seq %d: %v", u.ID, u.Seq, errs[i])
			}
			continue
		}
		ok = append(ok, u)
	}
	slices.SortFunc(ok, func(a, b *hub.Update) int { return cmpSeq(a.Seq, b.Seq) })
	for _, u := range ok {
		if want := uint64(len(l.acked) + 1); u.Seq != want {
			t.Fatalf("acknowledged %s has Seq %d, want %d", u.ID, u.Seq, want)
		}
		l.acked = append(l.acked, u)
	}
}

func updates(prefix string, n int) []*hub.Update {
	us := make([]*hub.Update, n)
	for i := range us {
		us[i] = enginetest.NewUpdate(fmt.Sprintf("urn:%s:%d", prefix, i))
	}
	return us
}

// faultOpts keeps every append in the journal (the tree is written at
// Close) and routes the journal's writes and syncs through in.
func faultOpts(in *injector) Options {
	return Options{test: &testOptions{
		applyCount: 1 << 30, applyBytes: 1 << 30, applyDelay: time.Hour,
		writeAt: in.writeAt, syncData: in.sync,
	}}
}

// TestFailedCommitRefused: a commit that fails after some or all of its
// frames reached the file refuses its appends, and they are absent from a
// crash image taken right after (no later commit wrote over them), from
// the running engine, and after a reopen; the engine takes appends again
// at the same Seqs.
func TestFailedCommitRefused(t *testing.T) {
	for _, fl := range []fault{faultSync, faultShort, faultNoSpace} {
		t.Run(fl.String(), func(t *testing.T) {
			s := seed(t)
			for run := range 8 {
				path := filepath.Join(t.TempDir(), "herald.db")
				in := newInjector(s + uint64(run))
				e, err := Open(path, faultOpts(in))
				if err != nil {
					t.Fatal(err)
				}
				var l ledger
				before := updates("before", 5)
				l.take(t, before, appendAll(t, e, before))
				in.arm(fl, faultNone)
				batch := updates("refused", 1+run)
				// One at a time: the first one's commit meets the fault.
				for _, u := range batch {
					err := e.Append(t.Context(), u)
					l.take(t, []*hub.Update{u}, []error{err})
				}
				if in.firedCount() != 1 || l.refused != 1 {
					t.Fatalf("%d faults fired, %d appends refused; want 1 and 1", in.firedCount(), l.refused)
				}
				if e.stopErr() != nil {
					t.Fatalf("engine stopped after an erased failure: %v", e.stopErr())
				}
				checkHistory(t, e, l.acked)

				// A crash image right after the refusal: the refused
				// frames were erased, not written over.
				in.arm(fl, faultNone)
				last := enginetest.NewUpdate("urn:last")
				if err := e.Append(t.Context(), last); err == nil {
					t.Fatal("append with a fault armed succeeded")
				}
				img := copyImage(t, path)
				r, err := Open(img, Options{test: holdTail})
				if err != nil {
					t.Fatal(err)
				}
				checkHistory(t, r, l.acked)
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				e = reopenChecked(t, e, path, l.acked)
				if err := e.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestFailStop: a failed commit whose erasure fails too stops the engine.
// Every later Append fails with ErrFailed, what was acknowledged stays
// readable, and a reopen, of the files as the engine left them or of a
// crash image, holds exactly the acknowledged updates although the
// refused frames are still in the journal; then the engine takes appends
// again.
func TestFailStop(t *testing.T) {
	for _, tc := range []struct{ commit, erase fault }{
		{faultSync, faultWrite},
		{faultSync, faultShort},
		{faultSync, faultSync},
		{faultShort, faultShort},
		{faultNoSpace, faultNoSpace},
	} {
		t.Run(tc.commit.String()+"/"+tc.erase.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "herald.db")
			in := newInjector(seed(t))
			in.landsOne = true
			opts := faultOpts(in)
			reg := newRegistry()
			opts.Registerer = reg
			e, err := Open(path, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			var l ledger
			us := updates("before", 5)
			l.take(t, us, appendAll(t, e, us))
			if err := e.Healthy(); err != nil {
				t.Fatalf("Healthy() = %v before any failure", err)
			}
			in.arm(tc.commit, tc.erase)
			bad := updates("refused", 4)
			errs := appendAll(t, e, bad)
			l.take(t, bad, errs)
			if l.refused == 0 {
				t.Fatal("nothing refused")
			}
			for i, err := range errs {
				if err != nil && !errors.Is(err, ErrFailed) {
					t.Fatalf("refused append %d: %v, want ErrFailed", i, err)
				}
			}
			if err := e.Append(t.Context(), enginetest.NewUpdate("urn:after")); !errors.Is(err, ErrFailed) {
				t.Fatalf("Append after the stop = %v, want ErrFailed", err)
			}
			if err := e.Healthy(); !errors.Is(err, ErrFailed) {
				t.Fatalf("Healthy() = %v after the stop, want ErrFailed: readiness must report it", err)
			}
			if got := gauge(t, reg, "herald_journal_stopped"); got != 1 {
				t.Fatalf("herald_journal_stopped = %v, want 1", got)
			}
			if got := gauge(t, reg, "herald_journal_commit_failures_total"); got != 1 {
				t.Fatalf("herald_journal_commit_failures_total = %v, want 1", got)
			}
			checkHistory(t, e, l.acked)
			img := copyImage(t, path)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.erase == faultWrite {
				// Nothing was erased: the refused frames are in the
				// journal, and only the fence keeps them out.
				data, err := os.ReadFile(journalPaths(img)[0])
				if err != nil {
					t.Fatal(err)
				}
				_, fs := scanJournal(data)
				if len(fs) == 0 || fs[len(fs)-1].seq <= uint64(len(l.acked)) {
					t.Fatalf("journal holds Seqs %v, want refused ones past %d", frameSeqs(fs), len(l.acked))
				}
			}
			for _, p := range []string{path, img} {
				r, err := Open(p, Options{test: holdTail})
				if err != nil {
					t.Fatal(err)
				}
				checkHistory(t, r, l.acked)
				if _, ok, err := r.readFence(); ok || err != nil {
					t.Fatalf("fence still there after reopen (err %v)", err)
				}
				u := enginetest.NewUpdate("urn:again")
				if err := r.Append(t.Context(), u); err != nil {
					t.Fatal(err)
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				// A second start, the fence gone, still holds no refused
				// frame: the reopen ended the journal's old rounds.
				r, err = Open(p, Options{test: holdTail})
				if err != nil {
					t.Fatal(err)
				}
				checkHistory(t, r, append(slices.Clone(l.acked), u))
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestFaultsRandomized appends random batches while random faults hit the
// journal's commits and erasures, the tree goes down and comes back, and
// the engine is reopened, from its files or from a crash image: every
// history it shows, running, stopped or reopened, is exactly the
// acknowledged updates in order.
func TestFaultsRandomized(t *testing.T) {
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, 0))
	path := filepath.Join(t.TempDir(), "herald.db")
	var treeDown atomic.Bool
	errTreeDown := errors.New("tree down (injected)")
	open := func(path string) (*Engine, *injector) {
		t.Helper()
		in := newInjector(rng.Uint64())
		e, err := Open(path, Options{MaxBatch: 1 + rng.IntN(8), test: &testOptions{
			segment:    1024 + rng.Int64N(4096), // many rounds, both files
			applyCount: 1 + rng.IntN(24),
			applyDelay: time.Millisecond,
			writeAt:    in.writeAt,
			syncData:   in.sync,
			apply: func() error {
				if treeDown.Load() {
					return errTreeDown
				}
				return nil
			},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return e, in
	}
	pick := func(weights ...int) int {
		n := rng.IntN(100)
		for i, w := range weights {
			if n < w {
				return i
			}
			n -= w
		}
		return len(weights)
	}
	e, in := open(path)
	defer func() { _ = e.Close() }()
	var (
		l                      ledger
		stops, reopens, images int
	)
	const rounds = 120
	for round := range rounds {
		commit := fault(pick(50, 20, 15, 10)) // none, sync, short, nospace, write
		erase := faultNone
		if pick(85) == 1 {
			erase = fault(1 + rng.IntN(4))
		}
		if round == rounds-10 && stops == 0 {
			commit, erase = faultSync, faultWrite // one stop at least
		}
		in.arm(commit, erase)
		us := updates(fmt.Sprintf("r%d", round), 1+rng.IntN(12))
		errs := appendAll(t, e, us)
		in.arm(faultNone, faultNone)
		refused := l.refused
		l.take(t, us, errs)
		// A restart right after a refusal is when refused frames left in
		// the journal would show.
		restart := pick(8) == 0 || l.refused > refused && pick(25) == 0
		if e.stopErr() != nil {
			stops++
			if err := e.Append(t.Context(), enginetest.NewUpdate("urn:stopped")); !errors.Is(err, ErrFailed) {
				t.Fatalf("round %d: Append on a stopped engine = %v, want ErrFailed", round, err)
			}
		}
		checkHistory(t, e, l.acked)
		switch {
		case e.stopErr() != nil || restart:
			// A restart: from the files as Close leaves them, with the
			// tree down, or from a crash image.
			if pick(30) == 0 {
				img := copyImageQuiet(t, e, path)
				if err := e.Close(); err != nil {
					t.Fatal(err)
				}
				path = img
				images++
			} else if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			e, in = open(path)
			reopens++
			checkHistory(t, e, l.acked)
		case pick(10) == 0:
			treeDown.Store(!treeDown.Load())
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	treeDown.Store(false)
	e, _ = open(path)
	checkHistory(t, e, l.acked)
	t.Logf("%d rounds: %d acknowledged, %d refused, %d stops, %d reopens (%d from crash images)",
		rounds, len(l.acked), l.refused, stops, reopens, images)
	if l.refused == 0 || len(l.acked) == 0 || stops == 0 {
		t.Fatalf("the faults did not bite: %d refused, %d acknowledged, %d stops", l.refused, len(l.acked), stops)
	}
}

// copyImageQuiet takes a crash image of a running engine's files, with its
// applier kept out of the tree while the files are copied: a copy of a
// bbolt file that a transaction is writing is not an image any crash
// leaves.
func copyImageQuiet(t *testing.T, e *Engine, path string) string {
	t.Helper()
	// bbolt runs one writing transaction at a time: holding one keeps
	// the applier's out, and it writes nothing until it commits.
	tx, err := e.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	return copyImage(t, path)
}
