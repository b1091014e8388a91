package hub_test

import (
	"fmt"
	"testing"
	"testing/synctest"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
)

// Recent reads a topic's updates newest first, page by page, across
// engine reads, stops at what retention kept, and reads back no further
// than its scan allows.
func TestRecent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eng := memory.New(memory.Options{Retention: hub.Retention{MaxCount: 700}})
		f := newFixture(t, hub.Config{Engine: eng})
		for i := range 1000 {
			topic := "other"
			if i%100 == 0 {
				topic = "t"
			}
			f.publish(topic, fmt.Sprint("x", i), "", false)
		}
		synctest.Wait()
		var got []string
		var before uint64
		for pages := 0; ; pages++ {
			us, next, err := f.hub.Recent(t.Context(), "t", before, 2, 10_000)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range us {
				got = append(got, u.ID)
			}
			if next == 0 || pages > 10 {
				break
			}
			before = next
		}
		// x0 … x200 left with retention (the newest 700 are x300 … x999).
		if fmt.Sprint(got) != "[x900 x800 x700 x600 x500 x400 x300]" {
			t.Fatalf("got %v", got)
		}
		us, next, err := f.hub.Recent(t.Context(), "t", 0, 10, 150)
		if err != nil {
			t.Fatal(err)
		}
		if len(us) != 1 || us[0].ID != "x900" || next == 0 {
			t.Fatalf("a scan of 150 found %d updates, next %d: want x900 alone, and more to read", len(us), next)
		}
	})
}

// Topics counts subscribers per matcher; EndSubject ends one subject's.
func TestTopicsAndEndSubject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, hub.Config{})
		for _, sub := range []string{"ann", "ann", "bob"} {
			o := f.onTopic("a")
			o.Subject = sub
			f.serve(t.Context(), o, &recorder{})
		}
		synctest.Wait()
		tcs, more := f.hub.Topics("", 10)
		if more || len(tcs) != 1 || tcs[0].Match != "a" || tcs[0].Subscribers != 3 {
			t.Fatalf("topics %+v more %v", tcs, more)
		}
		if n := f.hub.EndSubject("ann", hub.ErrDisconnected); n != 2 {
			t.Fatalf("EndSubject ended %d, want 2", n)
		}
		waitFor(t, "ann's streams to end", func() bool { tcs, _ := f.hub.Topics("", 10); return len(tcs) == 1 && tcs[0].Subscribers == 1 })
	})
}
