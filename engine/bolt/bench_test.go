package bolt

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
)

// BenchmarkAppend measures durable publishes (fsync on) with 1, 8 and 64
// concurrent publishers, each update with a fresh hub-generated
// (time-ordered) id, at a steady state where retention trims as much as
// is appended.
func BenchmarkAppend(b *testing.B) {
	for _, conc := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) { benchAppend(b, conc, nil, hub.NewID) })
	}
}

// BenchmarkAppendPresence is BenchmarkAppend under a churn of subscribers:
// 15 updates in 16 are presence updates, which retention (MaxPresence
// 10,000) drops from the middle of the log, behind the other updates it
// keeps (MaxCount 10,000, not reached).
func BenchmarkAppendPresence(b *testing.B) {
	for _, conc := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) { benchAppendMix(b, conc, nil, hub.NewID, 16) })
	}
}

// BenchmarkAppendRandomIDs is BenchmarkAppend with random (UUIDv4) ids:
// each lands on its own page of the id index.
func BenchmarkAppendRandomIDs(b *testing.B) {
	for _, conc := range []int{8, 64} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) { benchAppend(b, conc, nil, hub.NewRandomID) })
	}
}

// BenchmarkAppendFreelist compares bbolt's freelist settings under 64
// publishers, without fsync: the disk's fsync latency is too noisy on a
// shared VM to compare settings whose cost is CPU and bytes written.
func BenchmarkAppendFreelist(b *testing.B) {
	for _, typ := range []bbolt.FreelistType{bbolt.FreelistArrayType, bbolt.FreelistMapType} {
		for _, noSync := range []bool{false, true} {
			b.Run(fmt.Sprintf("type=%s/noFreelistSync=%v", typ, noSync), func(b *testing.B) {
				benchAppend(b, 64, func(o *bbolt.Options) {
					o.FreelistType, o.NoFreelistSync = typ, noSync
					o.NoSync = true
				}, hub.NewID)
			})
		}
	}
}

func benchAppend(b *testing.B, conc int, tune func(*bbolt.Options), newID func() string) {
	benchAppendMix(b, conc, tune, newID, 0)
}

// benchAppendMix is benchAppend where, when mix is positive, every update
// but one in mix is a presence update.
func benchAppendMix(b *testing.B, conc int, tune func(*bbolt.Options), newID func() string, mix int64) {
	e, err := Open(filepath.Join(b.TempDir(), "herald.db"), Options{
		Retention: hub.Retention{MaxCount: 10_000, MaxPresence: 10_000},
		tune:      tune,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	_, _ = e.Listen(func(hub.Batch) {})
	proto := enginetest.NewUpdate("urn:uuid:6f0e3c9a-1b2c-4d5e-8f90-123456789abc")
	var next atomic.Int64
	var wg sync.WaitGroup
	// Fill the history first: trimming and a full id index are part of
	// the steady state.
	fill := int64(10_000)
	if mix > 0 {
		fill = 10_000 * mix / (mix - 1) // presence updates up to their bound
	}
	for range conc {
		wg.Go(func() {
			for n := next.Add(1); n <= fill; n = next.Add(1) {
				u := *proto
				u.ID = newID()
				u.Presence = mix > 0 && n%mix != 0
				if err := e.Append(b.Context(), &u); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	next.Store(0)
	commits0 := e.commits.Load()
	b.ResetTimer()
	for range conc {
		wg.Go(func() {
			for n := next.Add(1); n <= int64(b.N); n = next.Add(1) {
				u := *proto
				u.ID = newID()
				u.Presence = mix > 0 && n%mix != 0
				if err := e.Append(b.Context(), &u); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
	b.ReportMetric(float64(b.N)/float64(e.commits.Load()-commits0), "publishes/commit")
}

// BenchmarkApply measures the tree's share of an append, which the
// applier pays behind the journal: one transaction of 1,024 records and
// the retention it brings, at a steady state where as many records go as
// come, without fsync (its cost does not depend on the kind of record).
// The churn puts 15 presence updates in 16, which go from the middle of
// the log; plain has none, and its updates go from the front.
func BenchmarkApply(b *testing.B) {
	for _, tc := range []struct {
		name string
		mix  int64
	}{{"plain", 0}, {"churn", 16}} {
		b.Run(tc.name, func(b *testing.B) {
			db, err := bbolt.Open(filepath.Join(b.TempDir(), "herald.db"), 0o600, &bbolt.Options{NoSync: true, FreelistType: bbolt.FreelistMapType})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			e := &Engine{db: db, maxCount: 10_000, maxPresence: 10_000, logger: slog.New(slog.DiscardHandler), now: time.Now}
			if err := db.Update(e.load); err != nil {
				b.Fatal(err)
			}
			proto := enginetest.NewUpdate("urn:uuid:6f0e3c9a-1b2c-4d5e-8f90-123456789abc")
			var seq uint64
			batch := make([]entry, 1024)
			apply := func() {
				for i := range batch {
					seq++
					u := *proto
					u.ID, u.Seq = hub.NewID(), seq
					u.Presence = tc.mix > 0 && int64(seq)%tc.mix != 0
					rec, err := u.MarshalBinary()
					if err != nil {
						b.Fatal(err)
					}
					batch[i] = entry{u: &u, rec: rec}
				}
				b.StartTimer()
				_, err := e.applyBatch(batch)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
			}
			// Beyond both bounds, whatever the mix: the steady state.
			b.StopTimer()
			for range 25 {
				apply()
			}
			b.ResetTimer()
			b.StopTimer()
			for range b.N {
				apply()
			}
			if e.st.n > 20_000 {
				b.Fatalf("%d records kept: retention does not keep up", e.st.n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/record")
		})
	}
}

// BenchmarkLookup measures resuming from an id among 1,000,000 records, and
// reading 100 records from a position, on a history built once (without
// fsync, for speed of the build only).
func BenchmarkLookup(b *testing.B) {
	const n = 1_000_000
	path := filepath.Join(b.TempDir(), "herald.db")
	e, err := Open(path, Options{Retention: hub.Retention{MaxCount: n}, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const writers = 256
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				if err := e.Append(b.Context(), enginetest.NewUpdate(benchID(i))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e.HistoryLen() != n {
		b.Fatalf("HistoryLen() = %d, want %d", e.HistoryLen(), n)
	}
	b.Run("records=1000000/hit", func(b *testing.B) {
		for b.Loop() {
			id := benchID(rand.IntN(n))
			if _, ok, err := e.lookup(id); !ok || err != nil {
				b.Fatalf("Lookup(%q) = %v, %v", id, ok, err)
			}
		}
	})
	b.Run("records=1000000/miss", func(b *testing.B) {
		for b.Loop() {
			if _, ok, err := e.lookup(benchID(n + rand.IntN(n))); ok || err != nil {
				b.Fatalf("Lookup = %v, %v", ok, err)
			}
		}
	})
	b.Run("records=1000000/read100", func(b *testing.B) {
		for b.Loop() {
			us, err := readUpdates(e, uint64(rand.IntN(n-100)), 100)
			if len(us) != 100 || err != nil {
				b.Fatalf("Read = %d, %v", len(us), err)
			}
		}
	})
	// Right after a restart: close the engine, open the file again, and
	// time the first resume (Open, Lookup, then reading 200,000 missed
	// updates in the replay's batches of 1,024).
	at, err := readUpdates(e, n-200_001, 1)
	if err != nil || len(at) != 1 {
		b.Fatalf("Read = %d, %v", len(at), err)
	}
	resumeID := at[0].ID
	if err := e.Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("records=1000000/reopen-resume200k", func(b *testing.B) {
		for b.Loop() {
			start := time.Now()
			r, err := Open(path, Options{Retention: hub.Retention{MaxCount: n}})
			if err != nil {
				b.Fatal(err)
			}
			opened := time.Since(start)
			seq, ok, err := r.lookup(resumeID)
			if !ok || err != nil {
				b.Fatalf("Lookup after reopen = %v, %v", ok, err)
			}
			first := time.Since(start)
			got := 0
			for after := seq; ; {
				us, err := readUpdates(r, after, 1024)
				if err != nil {
					b.Fatal(err)
				}
				if len(us) == 0 {
					break
				}
				got += len(us)
				after = us[len(us)-1].Seq
			}
			total := time.Since(start)
			if got != 200_000 {
				b.Fatalf("read %d updates after reopen, want 200,000 (from seq %d)", got, seq)
			}
			_ = r.Close()
			b.ReportMetric(float64(opened.Microseconds())/1000, "open-ms")
			b.ReportMetric(float64(first.Microseconds())/1000, "lookup-ms")
			b.ReportMetric(float64(got)/(total-first).Seconds(), "replayed/s")
		}
	})
}

func benchID(i int) string {
	return fmt.Sprintf("urn:uuid:%08x-0000-4000-8000-%012x", i*2654435761%(1<<32), i)
}

// BenchmarkAppendBaseline is durability without group commit: each publish
// is its own bbolt transaction and fsync, as a store that commits per
// update does. Compare with BenchmarkAppend at the same concurrency.
func BenchmarkAppendBaseline(b *testing.B) {
	for _, conc := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			db, err := bbolt.Open(filepath.Join(b.TempDir(), "baseline.db"), 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			proto := enginetest.NewUpdate("urn:uuid:6f0e3c9a-1b2c-4d5e-8f90-123456789abc")
			rec, _ := proto.MarshalBinary()
			var seq, next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range conc {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						err := db.Update(func(tx *bbolt.Tx) error {
							bk, err := tx.CreateBucketIfNotExists([]byte("log"))
							if err != nil {
								return err
							}
							var k [8]byte
							binary.BigEndian.PutUint64(k[:], uint64(seq.Add(1)))
							return bk.Put(k[:], rec)
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
		})
	}
}
