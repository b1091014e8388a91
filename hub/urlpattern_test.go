package hub

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dunglas/go-urlpattern"
)

var testBases = []string{
	"https://hub.example/.well-known/mercure",
	"http://localhost:3000/a/b/c?x=1#f",
	"",
	"not a base",
	"urn:example:opaque",
}

// libraryTest is the reference: go-urlpattern's own Test, with the panic
// guard the hub always had.
func libraryTest(p *urlpattern.URLPattern, topic, base string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return p.Test(topic, base)
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// piece is a bit of URL pattern syntax with topic text it may match.
type piece struct {
	pattern string
	topics  []string
}

var (
	protoPieces = []piece{
		{"https", []string{"https", "HTTPS", "http"}}, {"http", []string{"http"}}, {"http{s}?", []string{"http", "https"}},
		{"*", []string{"ftp", "urn", "https"}}, {"ws", []string{"ws", "wss"}}, {"(https|ftp)", []string{"ftp", "https"}},
		{"HTTPS", []string{"https"}}, {"urn", []string{"urn"}}, {"file", []string{"file"}},
	}
	hostPieces = []piece{
		{"example.com", []string{"example.com", "EXAMPLE.com", "example.com:443", "example.com:8080", "user:pw@example.com"}},
		{"*.example.com", []string{"a.example.com", "b.A.example.com", "example.com"}},
		{":sub.example.com", []string{"x.example.com", "x.y.example.com"}},
		{"xn--caf-dma.com", []string{"café.com", "xn--caf-dma.com"}}, {"café.com", []string{"café.com", "CAFÉ.com"}},
		{"[::1]", []string{"[::1]", "[0:0::1]"}}, {"127.0.0.1", []string{"127.0.0.1", "0x7f.1", "127.1"}},
		{"example.com:8080", []string{"example.com:8080", "example.com"}}, {"{www.}?example.com", []string{"www.example.com", "example.com"}},
		{"*", []string{"any.org", ""}}, {"example.com:*", []string{"example.com:1", "example.com"}},
		{"user:pw@example.com", []string{"user:pw@example.com", "example.com"}}, {"hub.example", []string{"hub.example"}},
	}
	segPieces = []piece{
		{"books", []string{"books", "BOOKS", "%62ooks"}}, {":id", []string{"1", "abc", "", "a.b"}}, {"*", []string{"x/y", "", "z"}},
		{`(\d+)`, []string{"12", "x"}}, {`:id(\d+)`, []string{"7", "7a"}}, {"{x}?", []string{"x", ""}},
		{":id?", []string{"q", ""}}, {":id+", []string{"a/b", "a"}}, {":id*", []string{"", "a/b/c"}},
		{"%20", []string{"%20", " "}}, {"é", []string{"é", "%C3%A9"}}, {"..", []string{"..", "x/.."}}, {".", []string{".", ""}},
		{"a b", []string{"a b", "a%20b"}}, {"{/z}?", []string{"z", ""}}, {"(a|b)", []string{"a", "b", "c"}}, {":n.json", []string{"x.json", "x.xml"}},
	}
	searchPieces = []piece{{"?*", []string{"?a=1", ""}}, {"\\?q=:v", []string{"?q=1", "?q"}}, {"?a=1", []string{"?a=1", "?a=2"}}, {"?:q", []string{"?x"}}}
	hashPieces   = []piece{{"#*", []string{"#x", ""}}, {"#x", []string{"#x", "#y"}}, {"#:frag", []string{"#f", ""}}}
)

// randomPattern builds a URL pattern from pieces covering the syntax
// (literal and wildcard components, named groups with and without
// modifiers, regexp groups, optional groups, relative patterns, case and
// encodings the canonicalization changes) and topics made of text each
// piece may match, so that both answers are common.
func randomPattern(r *rand.Rand) (string, []string) {
	var b strings.Builder
	topics := make([]strings.Builder, 6)
	add := func(p piece) {
		b.WriteString(p.pattern)
		for i := range topics {
			topics[i].WriteString(pick(r, p.topics))
		}
	}
	lit := func(s string) { add(piece{s, []string{s}}) }
	if r.IntN(4) > 0 {
		add(pick(r, protoPieces))
		lit("://")
		add(pick(r, hostPieces))
	}
	for range r.IntN(4) {
		lit("/")
		add(pick(r, segPieces))
	}
	if r.IntN(3) == 0 {
		add(pick(r, searchPieces))
	}
	if r.IntN(4) == 0 {
		add(pick(r, hashPieces))
	}
	if b.Len() == 0 {
		lit("/")
	}
	out := make([]string, len(topics))
	for i := range topics {
		out[i] = topics[i].String()
	}
	return b.String(), out
}

func randomTopic(r *rand.Rand) string {
	if r.IntN(10) == 0 {
		return pick(r, []string{"", "not a url at all", "urn:uuid:123", "mailto:a@b.c", "//other.example/a", "?x=1", "#y", "books/1", "/books/1", "\\books\\1", "https:", "https://", "http://[::1", "https://%zz/", "a:b"})
	}
	var b strings.Builder
	if r.IntN(5) > 0 {
		b.WriteString(pick(r, []string{"https", "http", "HTTPS", "ws", "ftp", "urn", "file", "wss"}))
		b.WriteString(pick(r, []string{"://", ":", ":///"}))
		if r.IntN(6) == 0 {
			b.WriteString(pick(r, []string{"user:pw@", "user@", ":@"}))
		}
		b.WriteString(pick(r, []string{"example.com", "www.example.com", "EXAMPLE.COM", "a.example.com", "xn--caf-dma.com", "café.com", "[::1]", "127.0.0.1", "0x7f.1", "hub.example", "other.org"}))
		if r.IntN(5) == 0 {
			b.WriteString(pick(r, []string{":8080", ":443", ":80", ":", ":x"}))
		}
	}
	for range r.IntN(5) {
		b.WriteString(pick(r, []string{"/", "\\"}))
		b.WriteString(pick(r, []string{"books", "1", "42", "abc", "", "..", ".", "%2e", "a b", "é", "%C3%A9", "BOOKS", "x.json", "users", "b", "a"}))
	}
	if r.IntN(4) == 0 {
		b.WriteString(pick(r, []string{"?a=1", "?q=x", "?", "?a b", "?é"}))
	}
	if r.IntN(5) == 0 {
		b.WriteString(pick(r, []string{"#x", "#", "#frag ment", "#é"}))
	}
	return b.String()
}

// TestURLPatternParseOnce checks the parse-once matching against the
// library's Test on randomized patterns, topics and bases: Match (through
// the base's recent parses) and matchParsed (given a parse) must both
// answer what Test answers, for every pair.
func TestURLPatternParseOnce(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, seed>>7))
	topics := make([]string, 300)
	for i := range topics {
		topics[i] = randomTopic(r)
	}
	pairs, matched, compiled := 0, 0, 0
	for range 1500 {
		value, own := randomPattern(r)
		base := testBases[0]
		if r.IntN(2) == 0 {
			base = pick(r, testBases)
		}
		m, err := NewMatcher(MatchURLPattern, value, base)
		if err != nil || m.any {
			continue
		}
		compiled++
		if m.comps == nil {
			t.Fatalf("pattern %q: components not readable, matching fell back to Test", value)
		}
		b := newBaseURL(base)
		for _, topic := range append(own, topics[r.IntN(200):][:20]...) {
			want := libraryTest(m.pattern, topic, base)
			if got := m.Match(topic); got != want {
				t.Fatalf("pattern %q base %q topic %q: Match %v, Test %v", value, base, topic, got, want)
			}
			if got := m.matchParsed(topic, b.parse(topic)); got != want {
				t.Fatalf("pattern %q base %q topic %q: matchParsed %v, Test %v", value, base, topic, got, want)
			}
			pairs++
			if want {
				matched++
			}
		}
	}
	// The comparison means something only if both answers are common.
	if compiled < 100 || matched < pairs/20 {
		t.Fatalf("weak sample: %d patterns compiled, %d of %d pairs matched", compiled, matched, pairs)
	}
	t.Logf("%d patterns, %d pairs, %d matched", compiled, pairs, matched)
}

// FuzzURLPattern compares parse-once matching with the library's Test on
// any pattern and topic.
func FuzzURLPattern(f *testing.F) {
	f.Add("https://example.com/books/:id", "https://example.com/books/1")
	f.Add("/books/*", "/books/x")
	f.Add("https://*.example.com/(\\d+)", "https://a.EXAMPLE.com/12")
	f.Add("http{s}?://x/:a?", "http://x/")
	f.Add("*://*/*", "urn:x")
	f.Fuzz(func(t *testing.T, value, topic string) {
		for _, base := range testBases[:2] {
			m, err := NewMatcher(MatchURLPattern, value, base)
			if err != nil || m.any || m.comps == nil {
				continue
			}
			if got, want := m.Match(topic), libraryTest(m.pattern, topic, base); got != want {
				t.Fatalf("pattern %q base %q topic %q: Match %v, Test %v", value, base, topic, got, want)
			}
		}
	})
}

// TestComponentsReadable fails when go-urlpattern's layout changes so that
// the component expressions cannot be read: matching would still be right
// (it falls back to Test) but parse the topic once per pattern again.
func TestComponentsReadable(t *testing.T) {
	p, err := urlpattern.New("https://example.com/books/:id", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := readComponents(p)
	if !ok {
		t.Fatal("go-urlpattern's component expressions are not readable: update readComponents")
	}
	if c.any != 1<<compUsername|1<<compPassword|1<<compSearch|1<<compHash {
		t.Errorf("wildcard components %08b", c.any)
	}
	if !c.re[compPathname].MatchString("/books/1") || c.re[compPathname].MatchString("/books/1/2") {
		t.Errorf("pathname expression %s", c.re[compPathname])
	}
}

func TestLiteralPrefix(t *testing.T) {
	for _, c := range []struct {
		re       string
		prefix   string
		complete bool
	}{
		{`\A(?:https)\z`, "https", true},
		{`\A(?:example\.com)\z`, "example.com", true},
		{`\A(?:)\z`, "", true},
		{`\A(?:\/books(?:\/([^\/]+?)))\z`, "/books/", false},
		{`\A(?:http(?:s)?)\z`, "http", false},
		{`(?i)\A(?:abc)\z`, "", false},
		{`abc`, "", false},
		{`\A(?:a|b)\z`, "", false},
		{`^(?:https://example\.com/books/)((?:[a-z])*)?$`, "https://example.com/books/", false},
	} {
		f := factsOf(regexp.MustCompile(c.re))
		if p, complete := f.prefix, f.complete; p != c.prefix || complete != c.complete {
			t.Errorf("%s: got %q %v, want %q %v", c.re, p, complete, c.prefix, c.complete)
		}
	}
	for re, want := range map[string]string{
		`\A(?:\/books(?:\/([^\/]+?))\/p7)\z`: "/p7",
		`\A(?:\/books(?:\/([^\/]+?)))\z`:     "",
		`\A(?:(.*)\.example\.com)\z`:         ".example.com",
		`(?i)\A(?:(.*)abc)\z`:                "",
		`\A(?:(.*)abc)`:                      "",
		`\A(?:(.*)(?:a|b))\z`:                "",
	} {
		if got := factsOf(regexp.MustCompile(re)).suffix; got != want {
			t.Errorf("%s: suffix %q, want %q", re, got, want)
		}
	}
}

// TestMatcherComplexity: patterns whose expressions would be large are
// refused, before compiling when their regexp groups alone are too large,
// and typical patterns stay far below the bound.
func TestMatcherComplexity(t *testing.T) {
	for _, v := range []string{
		"https://example.com/([a-z]{1000})",
		"https://example.com/(" + strings.Repeat(`\w{100}`, 12) + ")",
		"https://example.com/" + manyGroups(200),
	} {
		if _, err := NewMatcher(MatchURLPattern, v, testBases[0]); err != ErrMatcherComplex {
			t.Errorf("%.60q: %v, want ErrMatcherComplex", v, err)
		}
	}
	if !regexpGroupsAtLeast("/([a-z]{1000})", 1000) || regexpGroupsAtLeast(`/(\d+)/:id/(a|b)`, 100) || !regexpGroupsAtLeast(`/(x)/\((`+strings.Repeat("ab", 600)+`)`, 1000) {
		t.Error("regexpGroupsAtLeast")
	}
	tmpl := "https://example.com/" + strings.Repeat("{a}", 200)
	if _, err := NewMatcher(MatchSelector, tmpl, testBases[0]); err != ErrMatcherComplex {
		t.Errorf("template with 200 expressions: %v", err)
	}
	for _, v := range []string{"https://example.com/books/:id", "https://example.com/very/long/path/with/many/segments/:id/:x/*", "https://example.com/:a/:b/:c/:d/:e/:f/:g/:h"} {
		m, err := NewMatcher(MatchURLPattern, v, testBases[0])
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		if m.comps.insts > MaxMatcherInsts/4 {
			t.Errorf("%q: %d instructions", v, m.comps.insts)
		}
	}
}

func TestRoutes(t *testing.T) {
	for _, c := range []struct {
		kind  MatchKind
		value string
		want  route
	}{
		{MatchURLPattern, "https://example.com/books/:id", route{host: true, proto: "https", hostname: "example.com", prefix: "/books/"}},
		{MatchURLPattern, "/subs/*", route{host: true, proto: "https", hostname: "hub.example", prefix: "/subs/"}},
		{MatchURLPattern, "https://EXAMPLE.com/x", route{host: true, proto: "https", hostname: "example.com", prefix: "/x"}},
		{MatchURLPattern, "https://*.example.com/x", route{}},
		{MatchURLPattern, "http{s}?://example.com/x", route{}},
		{MatchSelector, "https://example.com/books/{id}", route{prefix: "https://example.com/books/"}},
		{MatchSelector, "{scheme}://example.com/", route{}},
	} {
		m, err := NewMatcher(c.kind, c.value, testBases[0])
		if err != nil {
			t.Fatal(err)
		}
		if m.route != c.want {
			t.Errorf("%q: route %+v, want %+v", c.value, m.route, c.want)
		}
	}
}

func BenchmarkURLPatternTest(b *testing.B) {
	const base = "https://hub.example/.well-known/mercure"
	const topic = "https://example.com/books/1234"
	m, err := NewMatcher(MatchURLPattern, "https://example.com/books/:id", base)
	if err != nil {
		b.Fatal(err)
	}
	bu := newBaseURL(base)
	// before: what each test cost when every pattern parsed the topic.
	b.Run("library-Test", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !m.pattern.Test(topic, base) {
				b.Fatal("no match")
			}
		}
	})
	// the topic parsed once per update, whatever the number of patterns.
	b.Run("parse-once", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = bu.parse(topic)
		}
	})
	// after: what each further pattern costs once the topic is parsed.
	pt := bu.parse(topic)
	b.Run("parsed-test", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !m.matchParsed(topic, pt) {
				b.Fatal("no match")
			}
		}
	})
	// Match on a topic the base parsed recently (a grant's CanRead).
	b.Run("Match-recent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !m.Match(topic) {
				b.Fatal("no match")
			}
		}
	})
	for _, n := range []int{1, 64} {
		ms := make([]*Matcher, n)
		for i := range ms {
			ms[i] = mustMatcher(MatchURLPattern, fmt.Sprintf("https://example.com/:x/%d", i))
		}
		b.Run(fmt.Sprintf("library-Test-%d-patterns", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, m := range ms {
					libraryTest(m.pattern, topic, base)
				}
			}
		})
		b.Run(fmt.Sprintf("parse-once-%d-patterns", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pt := bu.parse(topic)
				for _, m := range ms {
					m.matchParsed(topic, pt)
				}
			}
		})
	}
}

func manyGroups(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "x/:a%d/", i)
	}
	return b.String()
}

// TestMatcherSizeEstimate compares Size with the heap the matchers
// really hold, measured over many distinct ones: byte-bounded caches rely
// on the estimate being within a factor of two.
func TestMatcherSizeEstimate(t *testing.T) {
	b := newBaseURL(testBases[0])
	for _, f := range []struct {
		kind   MatchKind
		format string
	}{
		{MatchURLPattern, "https://example.com/books/%d/:id"},
		{MatchURLPattern, "https://example.com/very/long/path/with/many/segments/and/stuff/%d/:id/:x/*"},
		{MatchURLPattern, "https://example.com/(\\d+)/%d/(a|b|c)+"},
		{MatchURLPattern, "/books/%d/*"},
		{MatchURLPattern, "https://*.example.com/%d/:a/:b/:c?*#*"},
		{MatchURLPattern, "https://example.com/%d/([a-z]{100})"},
		{MatchSelector, "https://example.com/books/%d/{id}"},
		{MatchSelector, "https://example.com/very/long/path/with/many/segments/and/stuff/%d/{id}{?a,b,c}"},
		{MatchExact, "https://example.com/books/%d"},
	} {
		const n = 300
		ms := make([]*Matcher, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range ms {
			m, err := newMatcher(f.kind, fmt.Sprintf(f.format, i), b.raw, b)
			if err != nil {
				t.Fatal(err)
			}
			ms[i] = m
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		real := float64(after.HeapAlloc-before.HeapAlloc) / n
		est := 0
		for _, m := range ms {
			est += m.Size()
		}
		ratio := float64(est) / n / real
		t.Logf("%s %q: holds %.0f B, estimate %.0f B (%.2fx)", f.kind, f.format, real, float64(est)/n, ratio)
		if ratio < 0.5 || ratio > 2 {
			t.Errorf("%s %q: estimate %.2fx what it holds", f.kind, f.format, ratio)
		}
		runtime.KeepAlive(ms)
	}
}

// TestConcurrentParse: matchers are used from many goroutines at once
// (the dispatcher, replays, grants' CanRead), and each parse starts from
// the shared parsed base URL, which must stay read-only. Run with -race.
func TestConcurrentParse(t *testing.T) {
	for round := range 20 {
		m, err := NewMatcher(MatchURLPattern, "https://example.com/books/:id", "https://hub.example/.well-known/mercure?x=1")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				topic := fmt.Sprintf("https://example.com/books/%d-%d", round, g)
				if !m.Match(topic) {
					t.Errorf("%s does not match", topic)
				}
			})
		}
		wg.Wait()
	}
}
