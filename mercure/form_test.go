package mercure

import (
	"fmt"
	"net/url"
	"sync"
	"testing"

	"github.com/herald-hub/herald/hub"
)

func TestParseForm(t *testing.T) {
	got, err := parseForm("a=1&b=x+y&&c&d=%41%zz%4&e=;&=v&a=2", 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []field{{"a", "1"}, {"b", "x y"}, {"c", ""}, {"d", "A%zz%4"}, {"e", ";"}, {"", "v"}, {"a", "2"}}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pair %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if _, err := parseForm("a&b&c", 2); err == nil {
		t.Fatal("limit not enforced")
	}
}

// FuzzParseForm checks the parser against net/url on the inputs both
// accept: whatever URLSearchParams-style serialization produces must parse
// back to the same pairs.
func FuzzParseForm(f *testing.F) {
	f.Add("a", "b")
	f.Add("topic", "https://example.com/{id}?x=1&y=2")
	f.Add("x y", "%;+&=")
	f.Fuzz(func(t *testing.T, name, value string) {
		enc := url.Values{name: {value}}.Encode()
		got, err := parseForm(enc, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].name != name || got[0].value != value {
			t.Fatalf("%q parsed to %v", enc, got)
		}
		// Arbitrary input never panics.
		_, _ = parseForm(name+"&"+value, 10)
	})
}

// TestReservedConcurrently: publishes resolve topics against the shared
// parsed hub URL at the same time, which must stay read-only. Run with
// -race.
func TestReservedConcurrently(t *testing.T) {
	for range 10 {
		h, err := New(Config{Hub: &hub.Hub{}, Tokens: &Validator{}, PublicURL: mustURL(t, "https://hub.example/.well-known/mercure?x=1"), Draft8: true})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				if !h.reserved(fmt.Sprintf("/.well-known/mercure/%d", g)) {
					t.Errorf("a topic under the hub path is not reserved")
				}
			})
		}
		wg.Wait()
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
