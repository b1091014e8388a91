package bolt

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
)

// appendMix appends one update per letter of kinds, P for a presence
// update and O for another, with ids "u" + Seq, and returns them.
func appendMix(t *testing.T, e *Engine, kinds string) []*hub.Update {
	t.Helper()
	next := e.headSeq() + 1
	var us []*hub.Update
	for i, k := range kinds {
		u := enginetest.NewUpdate(fmt.Sprintf("u%d", next+uint64(i)))
		u.Presence = k == 'P'
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		us = append(us, u)
	}
	return us
}

// pick returns the updates of us with the given Seqs.
func pick(us []*hub.Update, seqs ...uint64) []*hub.Update {
	var out []*hub.Update
	for _, u := range us {
		if slices.Contains(seqs, u.Seq) {
			out = append(out, u)
		}
	}
	return out
}

// checkGaps reads from each position in wants and checks Gap and
// PresenceGap: wants[after] is "", "gap", "presence" or "gap presence".
func checkGaps(t *testing.T, e *Engine, wants map[uint64]string) {
	t.Helper()
	for after, want := range wants {
		s, err := e.read(after, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		if s.gap {
			got = append(got, "gap")
		}
		if s.presenceGap {
			got = append(got, "presence")
		}
		if g := strings.Join(got, " "); g != want {
			t.Errorf("read(%d): gaps %q, want %q", after, g, want)
		}
	}
}

// fileState reads the tree's state and presence bucket from the closed file
// at path.
func fileState(t *testing.T, path string) (treeState, []uint64) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var st treeState
	var pres []uint64
	err = db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		st = treeState{
			n:               int64(getUint64(meta, keyCount)),
			presence:        int64(getUint64(meta, keyPresence)),
			dropped:         getUint64(meta, keyDropped),
			droppedPresence: getUint64(meta, keyDroppedPresence),
		}
		return tx.Bucket(bucketPresence).ForEach(func(k, _ []byte) error {
			pres = append(pres, binary.BigEndian.Uint64(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return st, pres
}

// TestPresenceWatermarks: what retention dropped of each kind is kept in
// the file, and Read reports the same gaps after a reopen; a reopen with a
// tighter MaxPresence trims at once, from the middle of the log.
func TestPresenceWatermarks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	ret := hub.Retention{MaxCount: 2, MaxPresence: 3}
	e, err := Open(path, Options{Retention: ret})
	if err != nil {
		t.Fatal(err)
	}
	//             Seq 1234567890
	all := appendMix(t, e, "OPPOPPPPOP")
	// Others 4 and 9 stay; 1 goes, and every presence update before it.
	// The last 3 presence updates stay: 7, 8 and 10.
	want := pick(all, 4, 7, 8, 9, 10)
	waitFor(t, "retention", func() bool { return e.HistoryLen() == len(want) })
	checkHistory(t, e, want)
	gaps := map[uint64]string{0: "gap presence", 1: "presence", 5: "presence", 6: "", 8: "", 10: ""}
	checkGaps(t, e, gaps)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	st, pres := fileState(t, path)
	if wantSt := (treeState{n: 5, presence: 3, dropped: 1, droppedPresence: 6}); st != wantSt || !slices.Equal(pres, []uint64{7, 8, 10}) {
		t.Fatalf("file holds %+v, presence bucket %v; want %+v, [7 8 10]", st, pres, wantSt)
	}

	e, err = Open(path, Options{Retention: ret})
	if err != nil {
		t.Fatal(err)
	}
	checkHistory(t, e, want)
	checkGaps(t, e, gaps)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// MaxPresence 1 on reopen: 7 and 8 go at once, from between 4 and 9.
	e, err = Open(path, Options{Retention: hub.Retention{MaxCount: 2, MaxPresence: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	want = pick(all, 4, 9, 10)
	waitFor(t, "trim on reopen", func() bool { return e.HistoryLen() == len(want) })
	checkHistory(t, e, want)
	checkGaps(t, e, map[uint64]string{0: "gap presence", 3: "presence", 7: "presence", 8: "", 9: ""})
	if _, ok, _ := e.lookup("u7"); ok {
		t.Error("Lookup found a dropped presence update")
	}
	// The counts go on from the file's: one more update of the other
	// kind drops 4, and nothing of the presence kind.
	more := appendMix(t, e, "O")
	want = append(pick(all, 9, 10), more...)
	waitFor(t, "retention after reopen", func() bool { return e.HistoryLen() == len(want) })
	checkHistory(t, e, want)
	checkGaps(t, e, map[uint64]string{3: "gap presence", 4: "presence", 8: "", 10: ""})
}

// TestPresenceOldFile opens files written before presence updates existed:
// no presence bucket, no counts or watermarks of either kind. Their records
// are all of the other kind, the gaps are where they were, and retention
// goes on from there, presence updates included.
func TestPresenceOldFile(t *testing.T) {
	// oldFile writes a tree as the engine wrote it before presence
	// updates: records seqs of the log, last Seq last, and no journal.
	oldFile := func(t *testing.T, seqs []uint64, last uint64) (string, []*hub.Update) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "herald.db")
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var us []*hub.Update
		err = db.Update(func(tx *bbolt.Tx) error {
			var bs [3]*bbolt.Bucket
			for i, name := range [][]byte{bucketLog, bucketIDs, bucketMeta} {
				b, err := tx.CreateBucket(name)
				if err != nil {
					return err
				}
				bs[i] = b
			}
			log, ids, meta := bs[0], bs[1], bs[2]
			for _, seq := range seqs {
				u := enginetest.NewUpdate(fmt.Sprintf("u%d", seq)) // Private for odd lengths: flag bit 0
				u.Seq = seq
				rec, err := u.MarshalBinary()
				if err != nil {
					return err
				}
				if hub.RecordPresence(rec) || rec[0] != 1 {
					return fmt.Errorf("record %d is not in the old format", seq)
				}
				if err := log.Put(binary.BigEndian.AppendUint64(nil, seq), rec); err != nil {
					return err
				}
				if err := ids.Put(appendIDKey(nil, u.ID, seq), empty); err != nil {
					return err
				}
				us = append(us, u)
			}
			if err := putUint64(meta, keyEpoch, 42); err != nil {
				return err
			}
			if err := putUint64(meta, keyLast, last); err != nil {
				return err
			}
			return putUint64(meta, keyCount, uint64(len(seqs)))
		})
		if err != nil {
			t.Fatal(err)
		}
		return path, us
	}

	t.Run("trimmed", func(t *testing.T) {
		path, old := oldFile(t, []uint64{5, 6, 7, 8, 9, 10}, 10)
		e, err := Open(path, Options{Retention: hub.Retention{MaxCount: 7, MaxPresence: 2}})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if e.epoch != 42 {
			t.Fatalf("epoch %d, want the file's 42", e.epoch)
		}
		checkHistory(t, e, old)
		checkGaps(t, e, map[uint64]string{0: "gap", 3: "gap", 4: "", 7: "", 10: ""})

		// Presence updates are counted apart from the old records, which
		// are all of the other kind.
		//                       Seq 1111
		//                           1234
		added := appendMix(t, e, "PPPO")
		want := append(slices.Clone(old), pick(added, 12, 13, 14)...)
		waitFor(t, "presence retention", func() bool { return e.HistoryLen() == len(want) })
		checkHistory(t, e, want)
		checkGaps(t, e, map[uint64]string{4: "presence", 10: "presence", 11: ""})
		// MaxCount 7 of the other kind: 5 goes, and 6 with the next.
		added = append(added, appendMix(t, e, "OO")...)
		want = append(old[2:], pick(added, 12, 13, 14, 15, 16)...)
		waitFor(t, "count retention", func() bool { return e.HistoryLen() == len(want) })
		checkHistory(t, e, want)
		checkGaps(t, e, map[uint64]string{5: "gap presence", 6: "presence", 11: ""})
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		st, pres := fileState(t, path)
		if wantSt := (treeState{n: 9, presence: 2, dropped: 6, droppedPresence: 11}); st != wantSt || !slices.Equal(pres, []uint64{12, 13}) {
			t.Fatalf("file holds %+v, presence bucket %v; want %+v, [12 13]", st, pres, wantSt)
		}
	})

	t.Run("emptied", func(t *testing.T) {
		// Retention dropped everything: the last Seq says how much.
		path, _ := oldFile(t, nil, 7)
		e, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		checkGaps(t, e, map[uint64]string{0: "gap", 6: "gap", 7: ""})
		u := appendMix(t, e, "P")[0]
		if u.Seq != 8 {
			t.Fatalf("Seq %d after an emptied log ending at 7, want 8", u.Seq)
		}
		checkGaps(t, e, map[uint64]string{6: "gap", 7: ""})
	})

	t.Run("new", func(t *testing.T) {
		path, _ := oldFile(t, nil, 0)
		e, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		checkGaps(t, e, map[uint64]string{0: ""})
	})
}

// TestPresenceReplay: after a crash with every append still in the
// journal, Open replays them into the tree through retention: the tree
// ends as if the applier had written them, watermarks included.
func TestPresenceReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	ret := hub.Retention{MaxCount: 2, MaxPresence: 2}
	e, err := Open(path, Options{Retention: ret, test: holdTail})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	//                   Seq 12345678
	all := appendMix(t, e, "PPOOPPOP")
	// Nothing reached the tree, so retention has not applied yet.
	checkHistory(t, e, all)
	checkGaps(t, e, map[uint64]string{0: ""})
	img := copyImage(t, path)

	r, err := Open(img, Options{Retention: ret, test: holdTail})
	if err != nil {
		t.Fatal(err)
	}
	// Others 4 and 7 stay, so 3 goes, with 1 and 2; of the presence
	// updates after it, 6 and 8 stay, and 5 goes from between 4 and 6.
	want := pick(all, 4, 6, 7, 8)
	checkHistory(t, r, want)
	gaps := map[uint64]string{0: "gap presence", 2: "gap presence", 3: "presence", 4: "presence", 5: ""}
	checkGaps(t, r, gaps)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	st, pres := fileState(t, img)
	if wantSt := (treeState{n: 4, presence: 2, dropped: 3, droppedPresence: 5}); st != wantSt || !slices.Equal(pres, []uint64{6, 8}) {
		t.Fatalf("file holds %+v, presence bucket %v; want %+v, [6 8]", st, pres, wantSt)
	}
	// And a reopen says the same.
	r, err = Open(img, Options{Retention: ret})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkHistory(t, r, want)
	checkGaps(t, r, gaps)
}

// TestPresenceAge: MaxAge drops presence updates from the front of their
// own kind, wherever they are in the log, also when a reopen is what
// brings the bound.
func TestPresenceAge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	e, err := Open(path, Options{Retention: hub.Retention{MaxCount: 100}})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	var all []*hub.Update
	//             Seq 123456
	for i, k := range "OPPPOP" {
		u := enginetest.NewUpdate(fmt.Sprintf("u%d", i+1))
		u.Presence = k == 'P'
		if i >= 1 && i <= 3 {
			u.Time = old
		}
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		all = append(all, u)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = Open(path, Options{Retention: hub.Retention{MaxCount: 100, MaxAge: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// 2 to 4 expired behind 1, which is fresh and of the other kind.
	want := pick(all, 1, 5, 6)
	waitFor(t, "retention by age", func() bool { return e.HistoryLen() == len(want) })
	checkHistory(t, e, want)
	checkGaps(t, e, map[uint64]string{0: "presence", 3: "presence", 4: ""})
}

// TestTrimCost: trim looks at what it drops and one record past each
// front it stops at (the presence records', the log's, and the presence
// records' again behind a dropped update of the other kind), never at the
// history kept behind them, whichever retention applies.
func TestTrimCost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	e, err := Open(path, Options{NoSync: true, Retention: hub.Retention{MaxCount: 5, MaxPresence: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	// Seq 1 is of the other kind, 2-3001 presence, 3002 the other kind:
	// the presence updates kept, 2002-3001, lie between the two.
	appendMix(t, e, "O"+strings.Repeat("P", 3000)+"O")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e = &Engine{db: db, maxCount: 5, maxPresence: 1000, maxAge: time.Hour, logger: slog.New(slog.DiscardHandler)}
	if err := db.Update(e.load); err != nil {
		t.Fatal(err)
	}
	if want := (treeState{n: 1002, presence: 1000, droppedPresence: 2001}); e.st != want {
		t.Fatalf("loaded %+v, want %+v", e.st, want)
	}
	tx, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	st := e.st
	seq := uint64(3002)
	add := func(kinds string) {
		t.Helper()
		var batch []entry
		for _, k := range kinds {
			seq++
			u := enginetest.NewUpdate(fmt.Sprintf("u%d", seq))
			u.Seq, u.Presence = seq, k == 'P'
			rec, err := u.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			batch = append(batch, entry{u: u, rec: rec})
		}
		if err := put(tx, batch, &st); err != nil {
			t.Fatal(err)
		}
	}
	step := func(what string, budget int, wantDropped int64, wantMore bool) {
		t.Helper()
		n := st.n
		res, err := e.trim(tx, time.Now(), budget, &st)
		if err != nil {
			t.Fatal(err)
		}
		dropped := n - st.n
		if dropped != wantDropped || res.more != wantMore || res.visited > int(dropped)+3 {
			t.Fatalf("%s: dropped %d, more %v, looked at %d records; want %d dropped, more %v, and at most one more looked at per front",
				what, dropped, res.more, res.visited, wantDropped, wantMore)
		}
	}
	step("nothing to drop", 100, 0, false)
	add("P")
	step("one presence update over", 100, 1, false)
	if k, _ := tx.Bucket(bucketPresence).Cursor().First(); binary.BigEndian.Uint64(k) != 2003 {
		t.Fatalf("presence records start at %d, want 2003", binary.BigEndian.Uint64(k))
	}
	if k, _ := tx.Bucket(bucketLog).Cursor().First(); binary.BigEndian.Uint64(k) != 1 {
		t.Fatalf("log starts at %d, want 1: only presence updates were over", binary.BigEndian.Uint64(k))
	}
	add("OOOO")
	step("one update of the other kind over, at the front", 100, 1, false)
	add("O")
	// 3002 is next of the other kind: the 999 presence updates before it
	// go too, in steps of the budget.
	step("a presence backlog before the update over", 300, 300, true)
	step("the backlog goes on", 300, 300, true)
	step("the backlog ends", 500, 400, false)
	if st.dropped != 3002 || st.presence != 1 || st.n != 6 {
		t.Fatalf("state %+v; want the other kind dropped up to 3002, 1 presence update and 6 records left", st)
	}
	step("nothing left to drop", 100, 0, false)
}

// TestReadAcrossApply: between the applier's commit and its dropping of
// the tail, the tail still holds records that the commit's retention
// dropped. A read that finds the tree exhausted goes on in the tail after
// the tree's last Seq, so it never returns a record beside a watermark
// that says it is gone.
func TestReadAcrossApply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	ret := hub.Retention{MaxCount: 100, MaxAge: time.Minute}
	e, err := Open(path, Options{Retention: ret, test: holdTail})
	if err != nil {
		t.Fatal(err)
	}
	all := appendMix(t, e, "O")
	for _, id := range []string{"u2", "u3"} {
		u := enginetest.NewUpdate(id)
		u.Presence, u.Time = true, time.Now().Add(-time.Hour)
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		all = append(all, u)
	}
	// Close applies the tail: retention by age drops 2 and 3.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = Open(path, Options{Retention: ret, test: holdTail})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	checkHistory(t, e, all[:1])
	// The tail as the applier leaves it for a moment after that commit.
	e.mu.Lock()
	for _, u := range all[1:] {
		rec, err := u.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		e.tail.entries = append(e.tail.entries, entry{u: u, rec: rec})
	}
	e.mu.Unlock()
	s, err := e.read(0, 10)
	e.mu.Lock()
	e.tail.entries = nil
	e.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.updates) != 1 || s.updates[0].Seq != 1 || s.gap || !s.presenceGap {
		t.Fatalf("read(0) = Seqs %v, gap %v, presence gap %v; want [1] and a presence gap", seqsOf(s.updates), s.gap, s.presenceGap)
	}
}

func seqsOf(us []*hub.Update) []uint64 {
	out := make([]uint64, len(us))
	for i, u := range us {
		out[i] = u.Seq
	}
	return out
}

// TestCorruptPresenceRecord: a presence record that cannot be decoded is
// skipped as a presence gap, never a gap of the other kind, and retention
// drops it without stalling.
func TestCorruptPresenceRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.db")
	e, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	//             Seq 1234
	all := appendMix(t, e, "OPPO")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	corruptRecord(t, path, bucketPresence, 2)
	e, err = Open(path, Options{Retention: hub.Retention{MaxPresence: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// A read stops before it, the next starts with it.
	s, err := e.read(0, 10)
	if err != nil || len(s.updates) != 1 || s.updates[0].Seq != 1 || s.gap || s.presenceGap {
		t.Fatalf("read(0) = Seqs %v, gap %v, presence gap %v, %v; want [1] and no gap", seqsOf(s.updates), s.gap, s.presenceGap, err)
	}
	s, err = e.read(1, 10)
	if err != nil || !slices.Equal(seqsOf(s.updates), []uint64{3, 4}) || s.gap || !s.presenceGap {
		t.Fatalf("read(1) = Seqs %v, gap %v, presence gap %v, %v; want [3 4] after a presence gap", seqsOf(s.updates), s.gap, s.presenceGap, err)
	}
	// One more presence update puts it beyond MaxPresence: it goes.
	all = append(all, appendMix(t, e, "P")...)
	want := pick(all, 1, 3, 4, 5)
	waitFor(t, "the corrupt record dropped", func() bool { return e.HistoryLen() == len(want) })
	s, err = e.read(0, 10)
	if err != nil || !slices.Equal(seqsOf(s.updates), seqsOf(want)) || s.gap || !s.presenceGap {
		t.Fatalf("read(0) = Seqs %v, gap %v, presence gap %v, %v; want %v after a presence gap", seqsOf(s.updates), s.gap, s.presenceGap, err, seqsOf(want))
	}
}

// TestPresenceConcurrent appends a random mix of both kinds from several
// publishers under a small random retention, with the applier moving the
// tail to the tree in small random steps, while readers read from random
// positions: every read says exactly what is missing after its position
// (what retention dropped as of one moment), and the history ends as
// retention says, before and after a reopen.
func TestPresenceConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 1))
	ret := hub.Retention{MaxCount: 1 + rng.IntN(20), MaxPresence: 1 + rng.IntN(20)}
	opts := Options{Retention: ret, NoSync: true, MaxBatch: 1 + rng.IntN(8), test: &testOptions{
		applyCount: 1 + rng.IntN(24),
		applyDelay: time.Millisecond,
	}}
	t.Logf("retention %+v, batches of %d, applied by %d", ret, opts.MaxBatch, opts.test.applyCount)
	path := filepath.Join(t.TempDir(), "herald.db")
	e, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Close() }()

	// kinds[seq-1] is whether Seq is a presence update, as fed.
	var fed struct {
		sync.Mutex
		kinds []bool
	}
	head, err := e.Listen(func(b hub.Batch) {
		fed.Lock()
		for _, u := range b.Updates {
			fed.kinds = append(fed.kinds, u.Presence)
		}
		fed.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	// kindsUpTo returns the kinds of Seqs 1 to seq, once they are fed:
	// Read's Head may run ahead of the feed by a commit.
	kindsUpTo := func(seq uint64) []bool {
		for {
			fed.Lock()
			ks := fed.kinds
			fed.Unlock()
			if uint64(len(ks)) >= seq {
				return ks[:seq]
			}
			runtime.Gosched()
		}
	}
	read := func(after uint64, limit int) error {
		r, err := e.Read(t.Context(), hub.Position{Epoch: head.Epoch, Seq: after}, limit)
		if err != nil {
			return err
		}
		return checkRange(r, after, limit, kindsUpTo(r.Head))
	}

	const writers, each = 4, 120
	var (
		mu    sync.Mutex
		acked []*hub.Update
		wg    sync.WaitGroup
		done  = make(chan struct{})
	)
	for w := range writers {
		wr := rand.New(rand.NewPCG(rng.Uint64(), 2))
		share := 1 + wr.IntN(6) // one in share+1 is of the other kind
		wg.Go(func() {
			for i := range each {
				u := enginetest.NewUpdate(fmt.Sprintf("w%d-%d", w, i))
				u.Presence = wr.IntN(share+1) != 0
				if err := e.Append(t.Context(), u); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, u)
				mu.Unlock()
			}
		})
	}
	var readers sync.WaitGroup
	var reads atomic.Int64
	for range 2 {
		rr := rand.New(rand.NewPCG(rng.Uint64(), 3))
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				limit := 1 + rr.IntN(6)
				if rr.IntN(2) == 0 {
					limit = writers * each
				}
				if err := read(rr.Uint64N(e.headSeq()+1), limit); err != nil {
					t.Error(err)
					return
				}
				reads.Add(1)
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d reads while appending", reads.Load())

	slices.SortFunc(acked, func(a, b *hub.Update) int { return cmpSeq(a.Seq, b.Seq) })
	want := retained(acked, ret)
	check := func(e *Engine) {
		t.Helper()
		waitFor(t, "retention", func() bool { return e.HistoryLen() == len(want) })
		got, err := readUpdates(e, 0, len(acked)+1)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seqsOf(got), seqsOf(want)) {
			t.Fatalf("history %v, want %v", seqsOf(got), seqsOf(want))
		}
		for after := range uint64(len(acked)) + 1 {
			if err := read(after, len(acked)+1); err != nil {
				t.Fatal(err)
			}
		}
	}
	check(e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if e, err = Open(path, opts); err != nil {
		t.Fatal(err)
	}
	if e.epoch != head.Epoch {
		t.Fatalf("epoch %d after a reopen, was %d", e.epoch, head.Epoch)
	}
	check(e)
}

// checkRange checks r, read after the Seq after with limit, against the
// kinds of every Seq up to r.Head: the updates are in order, and Gap and
// PresenceGap say exactly what is missing up to Head (up to the last
// update of a full batch, which answers for no more).
func checkRange(r hub.Range, after uint64, limit int, kinds []bool) error {
	prev := after
	got := make(map[uint64]bool, len(r.Updates))
	for _, u := range r.Updates {
		if u.Seq <= prev || u.Seq > r.Head || u.Presence != kinds[u.Seq-1] {
			return fmt.Errorf("read(%d, %d) = Seqs %v, Head %d: out of order, past Head, or of the wrong kind", after, limit, seqsOf(r.Updates), r.Head)
		}
		got[u.Seq] = true
		prev = u.Seq
	}
	full := len(r.Updates) < limit
	end := r.Head
	if !full {
		end = prev
	}
	var other, presence bool
	var newest uint64 // the newest of the other kind missing
	for seq := after + 1; seq <= end; seq++ {
		switch {
		case got[seq]:
		case kinds[seq-1]:
			presence = true
		default:
			other, newest = true, seq
		}
	}
	if len(r.Updates) > 0 && r.Updates[0].Seq < newest {
		return fmt.Errorf("read(%d, %d) = Seqs %v: kept though Seq %d, of the other kind, was dropped", after, limit, seqsOf(r.Updates), newest)
	}
	if full && (r.Gap != other || r.PresenceGap != presence) ||
		!full && (r.Gap != other || presence && !r.PresenceGap) {
		return fmt.Errorf("read(%d, %d) = Seqs %v, Head %d: Gap %v, PresenceGap %v; missing of the other kind %v, presence updates %v",
			after, limit, seqsOf(r.Updates), r.Head, r.Gap, r.PresenceGap, other, presence)
	}
	return nil
}

// retained is what ret keeps of all, in Seq order: the last MaxCount
// updates of the other kind, and the last MaxPresence presence updates
// after every one dropped.
func retained(all []*hub.Update, ret hub.Retention) []*hub.Update {
	var cut uint64
	others := 0
	for _, u := range slices.Backward(all) {
		if !u.Presence {
			if others++; others > ret.MaxCount {
				cut = u.Seq
				break
			}
		}
	}
	var kept []*hub.Update
	presence := 0
	for _, u := range slices.Backward(all) {
		if u.Seq <= cut {
			break
		}
		if u.Presence {
			if presence++; presence > ret.MaxPresence {
				continue
			}
		}
		kept = append(kept, u)
	}
	slices.Reverse(kept)
	return kept
}
