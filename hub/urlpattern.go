package hub

import (
	"errors"
	"hash/maphash"
	"reflect"
	"regexp"
	"regexp/syntax"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/dunglas/go-urlpattern"
	"github.com/nlnwa/whatwg-url/url"
)

// URL patterns are matched in two steps, so that a topic is parsed once
// however many patterns test it.
//
// go-urlpattern's Test parses the topic and the base URL again on every
// call (about 8 µs and 100 allocations), and that parse is nearly all of
// its cost: matching the eight compiled component expressions takes a few
// hundred nanoseconds. The library keeps those expressions unexported and
// offers no way to test an already parsed URL (TestInit canonicalizes
// every component with a parse of its own), so readComponents reads them
// by reflection, and the topic is parsed here with the same WHATWG URL
// parser and the same calls Exec makes. Test answers true exactly when
// the topic parses and each component's expression matches; match below
// is that conjunction. The equivalence is checked against Test on
// randomized patterns and topics (TestURLPatternParseOnce, FuzzURLPattern).
// If an upgrade of the library changes its layout, readComponents reports
// it, the matcher falls back to Test (slower, never wrong), and
// TestComponentsReadable fails so the slowdown cannot go unnoticed.

// The components of a URL, in the order go-urlpattern matches them.
const (
	compProtocol = iota
	compUsername
	compPassword
	compHostname
	compPort
	compPathname
	compSearch
	compHash
	numComponents
)

var componentFields = [numComponents]string{"protocol", "username", "password", "hostname", "port", "pathname", "search", "hash"}

// fullWildcard is the expression go-urlpattern compiles a "*" component
// to; it matches any value without a newline.
const fullWildcard = `\A(?:(.*))\z`

// components holds a URL pattern's compiled component expressions, with
// what their syntax trees say for sure, which answers most tests without
// running an expression: a component that must equal a literal, or begin
// and end with literal text.
type components struct {
	re    [numComponents]*regexp.Regexp
	any   uint8 // bit i: re[i] is fullWildcard
	lit   uint8 // bit i: re[i] matches pre[i] and nothing else
	pre   [numComponents]string
	suf   [numComponents]string
	insts int // RE2 instructions, all components
	own   int // instructions not shared with other patterns
}

// readComponents reads p's component expressions; ok is false when the
// library's layout is not the one this code knows.
func readComponents(p *urlpattern.URLPattern) (c *components, ok bool) {
	defer func() {
		if recover() != nil {
			c, ok = nil, false
		}
	}()
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	v = v.Elem()
	reType := reflect.TypeFor[*regexp.Regexp]()
	c = &components{}
	for i, name := range componentFields {
		f := v.FieldByName(name)
		if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() || f.Elem().Kind() != reflect.Struct {
			return nil, false
		}
		r := f.Elem().FieldByName("regularExpression")
		if !r.IsValid() || r.Type() != reType {
			return nil, false
		}
		re := reflect.NewAt(reType, unsafe.Pointer(r.UnsafeAddr())).Elem().Interface().(*regexp.Regexp)
		if re == nil {
			return nil, false
		}
		c.re[i] = re
		src := re.String()
		if src == fullWildcard {
			c.any |= 1 << i
		}
		facts := factsOf(re)
		c.pre[i], c.suf[i] = facts.prefix, facts.suffix
		if facts.complete {
			c.lit |= 1 << i
		}
		c.insts += facts.insts
		if src != fullWildcard && src != `\A(?:)\z` {
			// The library shares the compiled wildcard and empty
			// expressions between patterns.
			c.own += facts.insts
		}
	}
	return c, true
}

// match reports whether every component of the parsed topic matches.
func (c *components) match(pt *parsedTopic) bool {
	if !pt.ok {
		return false
	}
	for i, re := range c.re {
		v := pt.c[i]
		switch {
		case c.lit&(1<<i) != 0:
			if v != c.pre[i] {
				return false
			}
		case c.any&(1<<i) != 0 && strings.IndexByte(v, '\n') < 0:
		case !strings.HasPrefix(v, c.pre[i]) || !strings.HasSuffix(v, c.suf[i]) || !re.MatchString(v):
			return false
		}
	}
	return true
}

// regexpGroupsAtLeast reports whether the regular expression groups of a
// URL pattern ("(...)") compile to at least limit instructions, without
// compiling them: it sums a lower bound of each group's program size read
// from its syntax tree. A group that does not parse is left to the library.
func regexpGroupsAtLeast(pattern string, limit int) bool {
	total := 0
	depth, start, class := 0, 0, false
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; {
		case c == '\\':
			i++
		case depth > 0 && class:
			if c == ']' {
				class = false
			}
		case depth > 0 && c == '[':
			class = true
		case c == '(':
			if depth == 0 {
				start = i + 1
			}
			depth++
		case c == ')' && depth > 0:
			if depth--; depth == 0 {
				if t, err := syntax.Parse(pattern[start:i], syntax.Perl); err == nil {
					total += minInsts(t, limit)
					if total >= limit {
						return true
					}
				}
			}
		}
	}
	return false
}

// minInsts is a lower bound of the size of re's compiled program, capped
// at limit: Simplify expands x{n,m} into max(n,m) copies of x, and every
// literal rune is an instruction.
func minInsts(re *syntax.Regexp, limit int) int {
	n := 0
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpNoMatch:
	case syntax.OpLiteral:
		n = len(re.Rune)
	case syntax.OpConcat, syntax.OpAlternate:
		for _, s := range re.Sub {
			if n += minInsts(s, limit); n >= limit {
				return limit
			}
		}
	case syntax.OpCapture, syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		n = minInsts(re.Sub[0], limit)
	case syntax.OpRepeat:
		copies := max(re.Min, re.Max)
		if sub := minInsts(re.Sub[0], limit); sub > 0 && copies > 0 {
			if copies >= limit/sub+1 {
				return limit
			}
			n = sub * copies
		}
	default:
		n = 1
	}
	return min(n, limit)
}

// exprFacts is what a compiled expression's syntax tree says for sure.
type exprFacts struct {
	// insts is the size of its RE2 program, compiled the way package
	// regexp compiles it.
	insts int
	// prefix and suffix are literal text every match begins and ends
	// with (there is one only where the expression is anchored at the
	// start, or the end, of the text); complete is true when the
	// expression matches prefix and nothing else.
	prefix, suffix string
	complete       bool
}

func factsOf(re *regexp.Regexp) exprFacts {
	var f exprFacts
	t, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return f
	}
	t = t.Simplify()
	if p, err := syntax.Compile(t); err == nil {
		f.insts = len(p.Inst)
	}
	subs := []*syntax.Regexp{t}
	if t.Op == syntax.OpConcat {
		subs = t.Sub
	}
	if len(subs) > 1 && subs[0].Op == syntax.OpBeginText {
		var b strings.Builder
		i := 1
		for ; i < len(subs); i++ {
			s := subs[i]
			if s.Op == syntax.OpEmptyMatch {
				continue
			}
			if !plainLiteral(s) {
				break
			}
			b.WriteString(string(s.Rune))
		}
		f.prefix = b.String()
		f.complete = i == len(subs)-1 && subs[i].Op == syntax.OpEndText
	}
	if n := len(subs); !f.complete && n > 1 && subs[n-1].Op == syntax.OpEndText {
		i := n - 2
		for i > 0 && subs[i].Op == syntax.OpEmptyMatch {
			i--
		}
		if plainLiteral(subs[i]) {
			f.suffix = string(subs[i].Rune)
		}
	}
	return f
}

func plainLiteral(re *syntax.Regexp) bool {
	return re.Op == syntax.OpLiteral && re.Flags&syntax.FoldCase == 0
}

// route says where the index files a pattern, so that an update is tested
// only against the patterns that can match it.
type route struct {
	// host is set for a URL pattern whose protocol and hostname are
	// literal: a topic matches only if, parsed, it has exactly these.
	host            bool
	proto, hostname string
	// prefix is literal text every matching topic begins with: its
	// pathname's for a host route, the raw topic's for a selector.
	prefix string
}

func urlRoute(c *components) route {
	const both = 1<<compProtocol | 1<<compHostname
	if c.lit&both != both {
		return route{}
	}
	return route{host: true, proto: c.pre[compProtocol], hostname: c.pre[compHostname], prefix: c.pre[compPathname]}
}

// selectorRoute: a selector matches its own value or an expansion of its
// template, so the prefix is what both begin with.
func selectorRoute(f exprFacts, value string) route {
	p := f.prefix
	n := 0
	for n < len(p) && n < len(value) && p[n] == value[n] {
		n++
	}
	return route{prefix: p[:n]}
}

// baseURL is a base URL parsed once, with the topics it parsed last.
type baseURL struct {
	raw    string
	u      *url.Url // nil when raw is ""
	bad    bool     // raw does not parse: no topic matches, as with Test
	parser url.Parser
	seed   maphash.Seed
	recent [recentParses]atomic.Pointer[parsedTopic]
}

// recentParses is how many parsed topics a base keeps for Match, so that
// a topic tested against many URL patterns one Match at a time (a grant's
// CanRead for each subscriber of a private update) is parsed once.
const recentParses = 8

func newBaseURL(raw string) *baseURL {
	b := &baseURL{raw: raw, parser: url.NewParser(), seed: maphash.MakeSeed()}
	if raw != "" {
		// Exec parses the base with the package parser, which has the
		// default options, as this one has.
		u, err := safeParse(b.parser, raw, nil)
		if err != nil {
			b.bad = true
		} else {
			// Every parse relative to u clones it, and the clone fills
			// u's search parameters in on first use: fill them in now,
			// before u is shared, so that parses only ever read it.
			_ = u.SearchParams()
			b.u = u
		}
	}
	return b
}

func safeParse(p url.Parser, s string, base *url.Url) (u *url.Url, err error) {
	defer func() {
		if recover() != nil {
			u, err = nil, errUnparsable
		}
	}()
	return p.BasicParser(s, base, nil, url.NoState)
}

var errUnparsable = errors.New("unparsable URL")

// parsedTopic is a topic parsed against a base URL: its components, in
// the order of the component constants, or ok false when it is no URL.
type parsedTopic struct {
	topic string
	ok    bool
	c     [numComponents]string
}

// parse reads topic as a URL relative to b, as Exec does. It never keeps
// anything: the BasicParser clones the base it is given.
func (b *baseURL) parse(topic string) *parsedTopic {
	pt := &parsedTopic{topic: topic}
	if b.bad {
		return pt
	}
	defer func() {
		if recover() != nil {
			pt.ok = false
		}
	}()
	u, err := b.parser.BasicParser(topic, b.u, nil, url.NoState)
	if err != nil {
		return pt
	}
	pt.c = [numComponents]string{u.Scheme(), u.Username(), u.Password(), u.Hostname(), u.Port(), u.Pathname(), u.Query(), u.Fragment()}
	pt.ok = true
	return pt
}

// lookup returns topic parsed, from the recent parses when it is there.
func (b *baseURL) lookup(topic string) *parsedTopic {
	slot := &b.recent[maphash.String(b.seed, topic)%recentParses]
	if pt := slot.Load(); pt != nil && pt.topic == topic {
		return pt
	}
	pt := b.parse(topic)
	slot.Store(pt)
	return pt
}

// Estimated memory of compiled matchers, measured with
// TestMatcherSizeEstimate: a regexp.Regexp with its programs costs a fixed
// part and a part per instruction.
const (
	sizeMatcher   = 160  // the Matcher and its value's header
	sizeURLFixed  = 2000 // a URLPattern: eight components, pattern strings
	sizeRegexp    = 700  // one regexp.Regexp of the library's, beyond its program
	sizePerInst   = 110  // per RE2 instruction of a URL pattern's expressions
	sizeTmplFixed = 1000 // a template's compiled regexp, beyond its program
	sizeTmplInst  = 60   // per RE2 instruction of a template's expression
)

// estimateSize estimates the bytes m holds, for byte-bounded caches. A
// URL pattern's shared wildcard expressions are not counted.
func estimateSize(m *Matcher) int {
	n := sizeMatcher + len(m.value)
	switch {
	case m.comps != nil:
		own := 0
		for i, re := range m.comps.re {
			if s := re.String(); m.comps.any&(1<<i) == 0 && s != `\A(?:)\z` {
				own++
			}
		}
		n += sizeURLFixed + 2*len(m.value) + own*sizeRegexp + m.comps.own*sizePerInst
	case m.pattern != nil:
		n += sizeURLFixed + 2*len(m.value) + 8*sizeRegexp + 100*sizePerInst
	case m.tmpl != nil:
		n += sizeTmplFixed + 2*len(m.value) + m.tmplInsts*sizeTmplInst
	}
	return n
}
