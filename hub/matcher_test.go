package hub_test

import (
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/hub"
)

const base = "https://hub.example/.well-known/mercure"

func TestMatchers(t *testing.T) {
	cases := []struct {
		kind  hub.MatchKind
		value string
		topic string
		want  bool
	}{
		{hub.MatchExact, "https://example.com/a", "https://example.com/a", true},
		{hub.MatchExact, "https://example.com/a", "https://example.com/A", false},
		{hub.MatchExact, "https://example.com/a", "https://example.com/a/", false},
		{hub.MatchExact, "*", "anything", true},
		{hub.MatchURLPattern, "*", "anything", true},
		{hub.MatchURLPattern, "https://example.com/books/:id", "https://example.com/books/1", true},
		{hub.MatchURLPattern, "https://example.com/books/:id", "https://example.com/books/1/x", false},
		{hub.MatchURLPattern, "https://example.com/books/:id", "https://EXAMPLE.com/books/1", true}, // host is case-insensitive
		{hub.MatchURLPattern, "https://example.com/books/:id", "https://example.com/BOOKS/1", false},
		{hub.MatchURLPattern, "https://example.com/users/42/*", "https://example.com/users/42/books/1", true},
		{hub.MatchURLPattern, "/.well-known/mercure/subscriptions/*", "/.well-known/mercure/subscriptions/x", true}, // relative to the hub URL
		{hub.MatchURLPattern, "https://example.com/*", "not a url at all", false},
		{hub.MatchURLPattern, "https://example.com/(\\d+)", "https://example.com/123", true},
		{hub.MatchSelector, "https://example.com/books/{id}", "https://example.com/books/1", true},
		{hub.MatchSelector, "https://example.com/books/{id}", "https://example.com/books/1/2", false},
		{hub.MatchSelector, "https://example.com/books/{id}", "https://example.com/books/{id}", true}, // a selector matches itself
		{hub.MatchSelector, "https://example.com/users/foo/{?topic}", "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1", true},
		{hub.MatchSelector, "plain", "plain", true},
		{hub.MatchSelector, "plain", "plainer", false},
		{hub.MatchSelector, "{unclosed", "{unclosed", true},
		{hub.MatchSelector, "*", "x", true},
	}
	for _, c := range cases {
		m, err := hub.NewMatcher(c.kind, c.value, base)
		if err != nil {
			t.Fatalf("%s %q: %v", c.kind, c.value, err)
		}
		if got := m.Match(c.topic); got != c.want {
			t.Errorf("%s %q vs %q: got %v, want %v", c.kind, c.value, c.topic, got, c.want)
		}
	}
}

// MayMatchPrefix never says false of a matcher that matches a topic with
// the prefix, and says false where a matcher's literal start rules the
// prefix out.
func TestMayMatchPrefix(t *testing.T) {
	const prefix = "/.well-known/mercure/subscriptions/"
	topics := []string{
		prefix + "exact/https%3A%2F%2Fexample.com%2Fbooks%2F1/urn%3Auuid%3A1",
		prefix + "https%3A%2F%2Fexample.com%2Fbooks%2F1/urn%3Auuid%3A1",
		prefix + "x",
	}
	cases := []struct {
		kind  hub.MatchKind
		value string
		want  bool
	}{
		{hub.MatchExact, "*", true},
		{hub.MatchExact, prefix + "x", true},
		{hub.MatchExact, "https://example.com/a", false},
		{hub.MatchExact, "/.well-known/mercure/subscriptions", false},
		{hub.MatchURLPattern, "*", true},
		{hub.MatchURLPattern, "/.well-known/mercure/subscriptions/*", true},
		{hub.MatchURLPattern, "/.well-known/mercure/subscriptions/:type/:match/:subscriber", true},
		{hub.MatchURLPattern, "/.well-known/mercure/*", true},
		{hub.MatchURLPattern, "https://hub.example/.well-known/mercure/subscriptions/*", true},
		{hub.MatchURLPattern, "https://example.com/books/:id", false},
		{hub.MatchURLPattern, "/books/*", false},
		{hub.MatchURLPattern, "*://*/.well-known/mercure/subscriptions/*", true},
		{hub.MatchURLPattern, "https://:host/*", true},
		{hub.MatchSelector, "*", true},
		{hub.MatchSelector, "{+any}", true},
		{hub.MatchSelector, "/.well-known/mercure/subscriptions{/topic}{/subscriber}", true},
		{hub.MatchSelector, "/.well-known/mercure/subscriptions/{topic}/{subscriber}", true},
		{hub.MatchSelector, "https://example.com/books/{id}", false},
		{hub.MatchSelector, "plain", false},
	}
	for _, c := range cases {
		m, err := hub.NewMatcher(c.kind, c.value, base)
		if err != nil {
			t.Fatalf("%s %q: %v", c.kind, c.value, err)
		}
		got := m.MayMatchPrefix(prefix)
		if got != c.want {
			t.Errorf("%s %q: MayMatchPrefix = %v, want %v", c.kind, c.value, got, c.want)
		}
		for _, topic := range topics {
			if m.Match(topic) && !got {
				t.Errorf("%s %q matches %q, yet MayMatchPrefix says no", c.kind, c.value, topic)
			}
		}
	}
}

func TestMatcherRejects(t *testing.T) {
	for _, c := range []struct {
		kind  hub.MatchKind
		value string
	}{
		{hub.MatchExact, "a\nb"},
		{hub.MatchExact, "a\x00"},
		{hub.MatchExact, "a\u200Bb"}, // zero-width space, category Cf
		{hub.MatchExact, "\xff"},
		{hub.MatchExact, "a\u0085"}, // C1
		{hub.MatchExact, strings.Repeat("a", hub.MaxMatcherLen+1)},
		{hub.MatchURLPattern, "https://example.com/(unclosed"},
		{hub.MatchURLPattern, "https://example.com/:id(?<=x)"},
	} {
		if _, err := hub.NewMatcher(c.kind, c.value, base); err == nil {
			t.Errorf("%s %q accepted", c.kind, c.value)
		}
	}
}

// TestURLPatternLinearTime feeds a pattern that backtracks catastrophically
// in engines like PCRE; RE2 answers at once. The test only asserts the
// answer; the package benchmark shows the cost stays linear.
func TestURLPatternLinearTime(t *testing.T) {
	m, err := hub.NewMatcher(hub.MatchURLPattern, "https://example.com/:a((?:a+)+)b", base)
	if err != nil {
		t.Fatal(err)
	}
	if m.Match("https://example.com/" + strings.Repeat("a", 5000) + "c") {
		t.Fatal("matched")
	}
}

func FuzzMatcher(f *testing.F) {
	f.Add(uint8(0), "https://example.com/a", "https://example.com/a")
	f.Add(uint8(1), "https://example.com/books/:id", "https://example.com/books/1")
	f.Add(uint8(1), "/rel/*", "/rel/x")
	f.Add(uint8(1), ":a((a+)+)b", "aaaaaaaaaaaaaaaaaaaaaaaac")
	f.Add(uint8(2), "https://example.com/{a}{/b*}{?c,d}", "https://example.com/x/y/z?c=1")
	f.Add(uint8(2), "{+x", "{+x")
	f.Fuzz(func(t *testing.T, kind uint8, value, topic string) {
		m, err := hub.NewMatcher(hub.MatchKind(kind%3), value, base)
		if err != nil {
			return
		}
		got := m.Match(topic)
		if value == topic && hub.MatchKind(kind%3) != hub.MatchURLPattern && !got {
			t.Fatalf("%q does not match itself", value)
		}
		if value == "*" && !got {
			t.Fatal("wildcard did not match")
		}
	})
}

func TestGeneratedIDForms(t *testing.T) {
	a, b := hub.NewID(), hub.NewID()
	if a == b || len(a) != 45 || a[23] != '7' || !strings.HasPrefix(a, "urn:uuid:") {
		t.Fatalf("NewID: %q %q", a, b)
	}
	time.Sleep(2 * time.Millisecond)
	if c := hub.NewID(); c[:22] <= a[:22] {
		t.Fatalf("NewID not time-ordered: %q then %q", a, c)
	}
	if r := hub.NewRandomID(); len(r) != 45 || r[23] != '4' {
		t.Fatalf("NewRandomID: %q", r)
	}
}
