package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open is the engine every conformance test runs against: durable, with
// fsync, as in production.
func open(t testing.TB, dir string, r hub.Retention) hub.Engine {
	t.Helper()
	e, err := Open(filepath.Join(dir, "herald.db"), Options{Retention: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func TestConformance(t *testing.T) {
	enginetest.Run(t, open, enginetest.Options{Durable: true, Faulty: openFaulty})
}

// openFaulty opens an engine whose next journal sync fails once the
// switch is on: the failed commit's frames are in the file by then, and
// the sync of their erasure succeeds, so the engine goes on.
// TestFailStop covers an erasure that fails too.
func openFaulty(t testing.TB, dir string, r hub.Retention) (hub.Engine, func(bool)) {
	t.Helper()
	var failing atomic.Bool
	e, err := Open(filepath.Join(dir, "herald.db"), Options{Retention: r, test: &testOptions{
		syncData: func(f *os.File) error {
			if failing.CompareAndSwap(true, false) {
				return errors.New("injected sync failure")
			}
			return fdatasync(f)
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, failing.Store
}

func TestCrash(t *testing.T) {
	enginetest.RunCrash(t, open)
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	e, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, err = Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open = %v, want a lock error", err)
	}
}

func TestBadID(t *testing.T) {
	e := open(t, t.TempDir(), hub.Retention{}).(*Engine)
	for _, id := range []string{"a\x00b", strings.Repeat("x", MaxIDLen+1)} {
		u := enginetest.NewUpdate("ok")
		u.ID = id
		if err := e.Append(t.Context(), u); err == nil {
			t.Errorf("Append with id of %d bytes containing NUL %v: no error", len(id), strings.Contains(id, "\x00"))
		}
	}
	// The longest id is stored and found.
	u := enginetest.NewUpdate("ok")
	u.ID = strings.Repeat("x", MaxIDLen)
	if err := e.Append(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if seq, ok, err := e.lookup(u.ID); err != nil || !ok || seq != 1 {
		t.Fatalf("Lookup = %d, %v, %v; want 1", seq, ok, err)
	}
}

// TestTrimBacklog reopens a large history with a retention that drops all of
// it: the writer trims it in bounded steps while appends go on.
func TestTrimBacklog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "herald.db")
	e, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5_000
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Go(func() {
			for i := range n / 50 {
				u := enginetest.NewUpdate(fmt.Sprintf("old-%d-%d", w, i))
				u.Time = time.Now().Add(-time.Hour)
				if err := e.Append(t.Context(), u); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// One trim step deletes its budget and says there is more.
	checkTrimStep(t, path, n)

	e, err = Open(path, Options{Retention: hub.Retention{MaxAge: time.Minute}, MaxBatch: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	u := enginetest.NewUpdate("new")
	if err := e.Append(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if u.Seq != n+1 {
		t.Fatalf("Seq %d, want %d", u.Seq, n+1)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.HistoryLen() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("HistoryLen() = %d after 10s, want 1", e.HistoryLen())
		}
		time.Sleep(5 * time.Millisecond)
	}
	us, err := readUpdates(e, 0, 10)
	if err != nil || len(us) != 1 || us[0].ID != "new" {
		t.Fatalf("Read = %v, %v; want the new update only", us, err)
	}
	if _, ok, _ := e.lookup("old-0-0"); ok {
		t.Fatal("expired update still found")
	}
}

func TestReadClosed(t *testing.T) {
	e := open(t, t.TempDir(), hub.Retention{}).(*Engine)
	_ = e.Close()
	if _, err := readUpdates(e, 0, 1); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Read after Close = %v, want hub.ErrClosed", err)
	}
	if _, _, err := e.lookup("x"); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Lookup after Close = %v, want hub.ErrClosed", err)
	}
}

func checkTrimStep(t *testing.T, path string, n int64) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e := &Engine{db: db, maxAge: time.Minute, logger: slog.New(slog.DiscardHandler)}
	if err := db.Update(e.load); err != nil {
		t.Fatal(err)
	}
	if e.st.n != n {
		t.Fatalf("restored count %d, want %d", e.st.n, n)
	}
	tx, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	st := e.st
	res, err := e.trim(tx, time.Now(), 128, &st)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := tx.Bucket(bucketLog).Cursor().First()
	if !res.more || st.n != n-128 || st.dropped != 128 || binary.BigEndian.Uint64(k) != 129 {
		t.Fatalf("trim step: more=%v, count %d, dropped up to %d, front %x; want more, %d, 128, 129", res.more, st.n, st.dropped, k, n-128)
	}
}

// TestWarm checks that Open reads an existing file into the page cache up
// to Options.Warm, and that Close stops the reading.
func TestWarm(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	e, err := Open(path, Options{NoSync: true, Warm: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		u := &hub.Update{ID: fmt.Sprintf("urn:test:%d", i), Topics: []string{"t"}, Frame: make([]byte, 1000)}
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
	<-e.warmed
	if n := e.warmedBytes.Load(); n != 0 {
		t.Errorf("Warm -1 read %d bytes", n)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() < 2*warmChunk {
		t.Fatalf("file of %d bytes: too small to warm in several chunks", st.Size())
	}
	for _, tc := range []struct {
		warm, want int64
	}{
		{0, st.Size()},
		{st.Size() + warmChunk, st.Size()},
		{4096, 4096},
		{warmChunk + 100, warmChunk + 100},
	} {
		e, err := Open(path, Options{NoSync: true, Warm: tc.warm})
		if err != nil {
			t.Fatal(err)
		}
		<-e.warmed
		if got := e.warmedBytes.Load(); got != tc.want {
			t.Errorf("Warm %d of a %d-byte file read %d bytes, want %d", tc.warm, st.Size(), got, tc.want)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Close while warming: returns, and the goroutine is gone (goleak).
	e, err = Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptRecordIsAGap: a record that cannot be decoded does not make
// every read across it fail: a read stops before it, and the next one
// reports the jump as a gap, so the hub ends what may have needed it
// instead of failing every resume or skipping it silently.
func TestCorruptRecordIsAGap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	e, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := e.Append(t.Context(), enginetest.NewUpdate(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	corruptRecord(t, path, bucketLog, 3)
	e, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	head, err := e.Listen(func(hub.Batch) {})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Read(t.Context(), hub.Position{Epoch: head.Epoch}, 10)
	if err != nil || r.Gap || len(r.Updates) != 2 || r.Updates[1].Seq != 2 {
		t.Fatalf("Read(0) = %d updates, gap %v, %v; want Seqs 1 and 2, no gap", len(r.Updates), r.Gap, err)
	}
	r, err = e.Read(t.Context(), hub.Position{Epoch: head.Epoch, Seq: 2}, 10)
	if err != nil || !r.Gap || len(r.Updates) != 2 || r.Updates[0].Seq != 4 {
		t.Fatalf("Read(2) = %d updates, gap %v, %v; want Seqs 4 and 5 after a gap", len(r.Updates), r.Gap, err)
	}
}

// readUpdates returns the updates e holds after the Seq after, as Read does.
func readUpdates(e *Engine, after uint64, limit int) ([]*hub.Update, error) {
	s, err := e.read(after, limit)
	return s.updates, err
}

// corruptRecord overwrites the record of seq in bucket of the closed
// file at path with bytes no decoder takes.
func corruptRecord(t *testing.T, path string, bucket []byte, seq uint64) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).Put(binary.BigEndian.AppendUint64(nil, seq), []byte("garbage"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
