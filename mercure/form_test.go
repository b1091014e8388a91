package mercure

import (
	"net/url"
	"testing"
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
