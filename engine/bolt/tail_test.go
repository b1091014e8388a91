package bolt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
)

// TestTailBound runs the engine with a tree that cannot be written: the
// tail fills up to its bound and no further, whatever the publishers do;
// the appends beyond it wait for the tree, up to the tail wait or their
// context, and are refused then; an append that waits when the tree comes
// back goes through. Time is the bubble's, so the waits are exact.
func TestTailBound(t *testing.T) {
	s := seed(t)
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(s, 0))
		path := filepath.Join(t.TempDir(), "herald.db")
		var treeDown atomic.Bool
		treeDown.Store(true)
		var tries atomic.Int64
		reg := prometheus.NewRegistry()
		const limit, wait = 8 << 10, 5 * time.Second
		e, err := Open(path, Options{
			NoSync: true, MaxTailBytes: limit, TailWait: wait, Registerer: reg,
			test: &testOptions{apply: func() error {
				tries.Add(1)
				if treeDown.Load() {
					return errors.New("tree down (injected)")
				}
				return nil
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if got := gauge(t, reg, "herald_journal_tail_limit_bytes"); got != limit {
			t.Fatalf("herald_journal_tail_limit_bytes = %v, want %d", got, limit)
		}

		// Many publishers at once, records of random sizes, five times
		// what the tail takes.
		us := make([]*hub.Update, 40)
		maxRec := 0
		for i := range us {
			us[i] = enginetest.NewUpdate(fmt.Sprintf("urn:tail:%d", i))
			us[i].Frame = []byte(strings.Repeat("x", 200+rng.IntN(1800)))
			rec, _ := us[i].MarshalBinary()
			maxRec = max(maxRec, len(rec))
		}
		start := time.Now()
		errs := appendAll(t, e, us)
		var l ledger
		l.take(t, us, errs)
		if len(l.acked) == 0 || l.refused == 0 {
			t.Fatalf("%d acknowledged, %d refused: the bound did not bite", len(l.acked), l.refused)
		}
		for i, err := range errs {
			if err != nil && !errors.Is(err, ErrTailFull) {
				t.Fatalf("append %d: %v, want ErrTailFull", i, err)
			}
		}
		if d := time.Since(start); d != wait {
			t.Fatalf("the refused appends waited %v, want the tail wait %v", d, wait)
		}
		size := e.tailBytes()
		if size < limit || size >= limit+maxRec {
			t.Fatalf("tail of %d bytes; want at least the bound %d, less than one record (%d) more", size, limit, maxRec)
		}
		if got := gauge(t, reg, "herald_journal_tail_bytes"); got != float64(size) {
			t.Fatalf("herald_journal_tail_bytes = %v, want %d", got, size)
		}
		if tries.Load() == 0 {
			t.Fatal("the applier never tried the tree")
		}

		// A context that ends first ends the wait.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		u := enginetest.NewUpdate("urn:tail:ctx")
		err = e.Append(ctx, u)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || u.Seq != 0 {
			t.Fatalf("Append with a 1s deadline = %v (Seq %d), want DeadlineExceeded", err, u.Seq)
		}

		// An append waiting when the tree comes back is taken.
		u = enginetest.NewUpdate("urn:tail:later")
		done := make(chan error, 1)
		go func() { done <- e.Append(t.Context(), u) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Append returned %v while the tail was full", err)
		default:
		}
		if e.tailBytes() != size {
			t.Fatalf("tail grew from %d to %d bytes while full", size, e.tailBytes())
		}
		treeDown.Store(false)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		l.take(t, []*hub.Update{u}, []error{nil})
		checkHistory(t, e, l.acked)
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := Open(path, Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		checkHistory(t, r, l.acked)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestTailWaitNegative: with a negative TailWait an append refuses at once
// when the tail is full, and concurrent publishers never pile up.
func TestTailWaitNegative(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var treeDown atomic.Bool
		treeDown.Store(true)
		const limit = 4 << 10
		e, err := Open(filepath.Join(t.TempDir(), "herald.db"), Options{
			NoSync: true, MaxTailBytes: limit, TailWait: -1,
			test: &testOptions{apply: func() error {
				if treeDown.Load() {
					return errors.New("tree down (injected)")
				}
				return nil
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		start := time.Now()
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			refused int
		)
		for w := range 8 {
			wg.Go(func() {
				for i := range 20 {
					err := e.Append(t.Context(), enginetest.NewUpdate(fmt.Sprintf("urn:neg:%d:%d", w, i)))
					if errors.Is(err, ErrTailFull) {
						mu.Lock()
						refused++
						mu.Unlock()
					} else if err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if refused == 0 {
			t.Fatal("nothing refused")
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("appends waited %v with a negative TailWait", d)
		}
		if size := e.tailBytes(); size < limit || size > limit+1024 {
			t.Fatalf("tail of %d bytes with a bound of %d", size, limit)
		}
	})
}
