package memory_test

import (
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t testing.TB, dir string, r hub.Retention) hub.Engine {
	return memory.New(memory.Options{Retention: r})
}

func TestConformance(t *testing.T) {
	enginetest.Run(t, open, enginetest.Options{
		Replace: func(t testing.TB, e hub.Engine) { e.(*memory.Engine).Reset() },
	})
}

func TestDefaultCapacity(t *testing.T) {
	e := memory.New(memory.Options{})
	defer e.Close()
	head, err := e.Listen(func(hub.Batch) {})
	if err != nil {
		t.Fatal(err)
	}
	for i := range memory.DefaultMaxCount + 5 {
		if err := e.Append(t.Context(), enginetest.NewUpdate(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.HistoryLen(); n != memory.DefaultMaxCount {
		t.Fatalf("HistoryLen() = %d, want %d", n, memory.DefaultMaxCount)
	}
	r, err := e.Read(t.Context(), hub.Position{Epoch: head.Epoch}, 1)
	if err != nil || len(r.Updates) != 1 || r.Updates[0].Seq != 6 || !r.Gap {
		t.Fatalf("Read(0, 1) = %+v, %v; want Seq 6 after a gap", r, err)
	}
}

// An id shared by a presence update and another update: dropping the
// presence one from the middle of the log leaves the other findable, and
// dropping the other (the earliest occurrence) moves the index on.
func TestSharedIDAcrossKinds(t *testing.T) {
	e := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 2, MaxPresence: 1}})
	defer e.Close()
	if _, err := e.Listen(func(hub.Batch) {}); err != nil {
		t.Fatal(err)
	}
	add := func(id string, presence bool) {
		t.Helper()
		u := enginetest.NewUpdate(id)
		u.Presence = presence
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
	lookup := func(id string, want uint64) {
		t.Helper()
		pos, ok, err := e.Lookup(t.Context(), id)
		if err != nil || ok != (want != 0) || ok && pos.Seq != want {
			t.Fatalf("Lookup(%q) = %d, %v, %v; want %d", id, pos.Seq, ok, err, want)
		}
	}
	add("a", false) // 1
	add("x", true)  // 2
	add("x", false) // 3
	add("a", true)  // 4, drops 2 from the middle
	lookup("x", 3)
	lookup("a", 1)
	add("b", false) // 5, drops 1
	lookup("a", 4)
	add("y", true) // 6, drops 4
	lookup("a", 0)
	lookup("x", 3)
	if n := e.HistoryLen(); n != 3 {
		t.Fatalf("HistoryLen() = %d, want 3 (Seqs 3, 5, 6)", n)
	}
}

// BenchmarkAppendPresence is BenchmarkAppend with every other update a
// presence one, so that both rings drop one on most appends.
func BenchmarkAppendPresence(b *testing.B) {
	e := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 1000, MaxPresence: 1000}})
	defer e.Close()
	_, _ = e.Listen(func(hub.Batch) {})
	u := enginetest.NewUpdate("x")
	p := *u
	p.Presence = true
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			v := *u
			if i%2 == 1 {
				v = p
			}
			if err := e.Append(b.Context(), &v); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAppend measures the ring with 8 concurrent publishers.
func BenchmarkAppend(b *testing.B) {
	e := memory.New(memory.Options{})
	defer e.Close()
	_, _ = e.Listen(func(hub.Batch) {})
	u := enginetest.NewUpdate("x")
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v := *u
			if err := e.Append(b.Context(), &v); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
