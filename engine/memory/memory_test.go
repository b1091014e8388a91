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
