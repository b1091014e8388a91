package hub

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dunglas/go-urlpattern"
	"github.com/yosida95/uritemplate/v3"
)

// MatchKind is how a matcher's value is interpreted.
type MatchKind uint8

const (
	// MatchExact compares topics byte for byte (draft-08 "exact").
	MatchExact MatchKind = iota
	// MatchURLPattern evaluates a WHATWG URL Pattern (draft-08 "urlpattern").
	MatchURLPattern
	// MatchSelector is a draft-07 topic selector: a topic equal to the
	// selector matches, and so does any expansion of the selector read as
	// an RFC 6570 URI template.
	MatchSelector
)

// String returns the draft-08 matcher type name, or "selector".
func (k MatchKind) String() string {
	switch k {
	case MatchExact:
		return "exact"
	case MatchURLPattern:
		return "urlpattern"
	default:
		return "selector"
	}
}

// Wildcard is the matcher value that matches every topic, whatever the kind.
const Wildcard = "*"

// MaxMatcherLen bounds the length of a matcher value.
const MaxMatcherLen = 2048

// MaxMatcherInsts bounds the size of a matcher's compiled regular
// expressions, in RE2 instructions. Matching costs time in proportion to
// it and holding the matcher costs memory (about 50 bytes an instruction):
// without a bound, a 2 KB URL pattern made of repeats such as
// "([a-z]{1000})" compiles to megabytes and matches slowly. A typical URL
// pattern takes under 150, a typical URI template under 100.
const MaxMatcherInsts = 1024

// Matcher tests topics. It is immutable and safe for concurrent use.
//
// Every kind matches in time linear in the topic's length: URL patterns and
// URI templates compile to Go's RE2 regular expressions, which never
// backtrack, so a crafted pattern cannot stall the hub, and their size is
// bounded (MaxMatcherInsts).
type Matcher struct {
	kind  MatchKind
	value string
	any   bool
	size  int // estimated bytes held, see estimateSize

	// URL patterns: the topic is parsed against base once (see
	// urlpattern.go), then each component is matched by comps. pattern
	// is kept for the rare case where comps could not be read.
	base    *baseURL
	pattern *urlpattern.URLPattern
	comps   *components

	tmpl      *regexp.Regexp
	tmplInsts int

	route route
}

// Errors returned by NewMatcher.
var (
	ErrMatcherText    = errors.New("matcher contains invalid UTF-8, control or format characters")
	ErrMatcherTooLong = fmt.Errorf("matcher is longer than %d bytes", MaxMatcherLen)
	ErrMatcherComplex = fmt.Errorf("matcher compiles to more than %d regular expression instructions", MaxMatcherInsts)
)

// NewMatcher compiles value as a matcher of the given kind. base is the hub
// URL, against which relative URL patterns and relative topics resolve.
//
// A Matcher from NewMatcher is its caller's alone; a hub's Matchers table
// (Hub.Matchers) hands out shared ones instead.
func NewMatcher(kind MatchKind, value, base string) (*Matcher, error) {
	return newMatcher(kind, value, base, nil)
}

// newMatcher compiles a matcher; b, when not nil, is base already parsed.
func newMatcher(kind MatchKind, value, base string, b *baseURL) (*Matcher, error) {
	if len(value) > MaxMatcherLen {
		return nil, ErrMatcherTooLong
	}
	if !ValidText(value) {
		return nil, ErrMatcherText
	}
	m := &Matcher{kind: kind, value: value, any: value == Wildcard}
	switch {
	case m.any:
	case kind == MatchExact:
	case kind == MatchURLPattern:
		if regexpGroupsAtLeast(value, MaxMatcherInsts+1) {
			// Refused before the library compiles it: compiling is
			// where the megabytes would go.
			return nil, ErrMatcherComplex
		}
		p, err := compileURLPattern(value, base)
		if err != nil {
			return nil, fmt.Errorf("invalid URL pattern: %w", err)
		}
		if b == nil {
			b = newBaseURL(base)
		}
		m.pattern, m.base = p, b
		if c, ok := readComponents(p); ok {
			m.comps = c
			m.route = urlRoute(c)
			if c.insts > MaxMatcherInsts {
				return nil, ErrMatcherComplex
			}
		}
	case kind == MatchSelector:
		// A selector that is not a valid template still matches itself.
		if t, err := uritemplate.New(value); err == nil && len(t.Varnames()) > 0 {
			re, err := templateRegexp(t)
			if err != nil {
				return nil, fmt.Errorf("invalid URI template: %w", err)
			}
			f := factsOf(re)
			if f.insts > MaxMatcherInsts {
				return nil, ErrMatcherComplex
			}
			m.tmpl, m.tmplInsts = re, f.insts
			m.route = selectorRoute(f, value)
		}
	default:
		return nil, fmt.Errorf("unknown matcher kind %d", kind)
	}
	m.size = estimateSize(m)
	return m, nil
}

// compileURLPattern guards the parser: it is third-party code fed with
// client input, and a panic there must become a 400, not a crash.
func compileURLPattern(value, base string) (p *urlpattern.URLPattern, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("unparsable pattern")
		}
	}()
	return urlpattern.New(value, base, nil)
}

// templateRegexp guards Template.Regexp, which panics (regexp.MustCompile)
// on templates whose expansion exceeds RE2's repeat limit, such as one
// expression with more than a thousand variables.
func templateRegexp(t *uritemplate.Template) (re *regexp.Regexp, err error) {
	defer func() {
		if r := recover(); r != nil {
			re, err = nil, fmt.Errorf("template too complex")
		}
	}()
	return t.Regexp(), nil
}

// Kind returns the matcher's kind.
func (m *Matcher) Kind() MatchKind { return m.kind }

// Value returns the matcher's source text.
func (m *Matcher) Value() string { return m.value }

// IsWildcard reports whether the matcher matches every topic.
func (m *Matcher) IsWildcard() bool { return m.any }

// IsPattern reports whether the matcher is a pattern: a URL pattern or a
// URI template, which the hub must evaluate, as opposed to an exact topic
// or the wildcard, which it finds by lookup. Budgets count patterns.
func (m *Matcher) IsPattern() bool { return !m.any && !m.literal() }

// Size returns an estimate of the bytes the compiled matcher holds.
func (m *Matcher) Size() int { return m.size }

// literal reports whether m matches exactly its own value and nothing else.
func (m *Matcher) literal() bool {
	return !m.any && (m.kind == MatchExact || (m.kind == MatchSelector && m.tmpl == nil))
}

// baseText returns the base URL a URL pattern resolves against, "" for
// the other kinds, whose matching does not depend on it.
func (m *Matcher) baseText() string {
	if m.base == nil {
		return ""
	}
	return m.base.raw
}

// Match reports whether topic matches.
func (m *Matcher) Match(topic string) bool {
	switch {
	case m.any:
		return true
	case m.kind == MatchURLPattern:
		if m.comps == nil {
			return m.testPattern(topic)
		}
		return m.comps.match(m.base.lookup(topic))
	case m.value == topic:
		return true
	case m.tmpl != nil:
		return m.tmpl.MatchString(topic)
	}
	return false
}

// matchParsed is Match for a URL pattern given the topic already parsed
// against the pattern's base (pt comes from m.base.parse(topic) or a base
// with the same text).
func (m *Matcher) matchParsed(topic string, pt *parsedTopic) bool {
	if m.comps == nil {
		return m.testPattern(topic)
	}
	return m.comps.match(pt)
}

func (m *Matcher) testPattern(topic string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return m.pattern.Test(topic, m.base.raw)
}

// MayMatchPrefix reports whether m may match a topic that begins with
// prefix, a path ("/…") or any raw topic text. It never says false of a
// matcher that matches such a topic; it may say true of one that matches
// none, for patterns it cannot see through. For a path, URL patterns are
// judged by the literal start of their pathname.
func (m *Matcher) MayMatchPrefix(prefix string) bool {
	compatible := func(p string) bool { return strings.HasPrefix(prefix, p) || strings.HasPrefix(p, prefix) }
	switch {
	case m.any:
		return true
	case m.literal():
		return strings.HasPrefix(m.value, prefix)
	case m.kind == MatchSelector:
		return compatible(m.route.prefix)
	case m.route.host && strings.HasPrefix(prefix, "/"):
		return compatible(m.route.prefix)
	}
	return true
}

// MatchAny reports whether one of topics matches.
func (m *Matcher) MatchAny(topics []string) bool {
	for _, t := range topics {
		if m.Match(t) {
			return true
		}
	}
	return false
}

// ValidText reports whether s is valid UTF-8 free of C0 and C1 control
// characters, DEL and Unicode format characters (category Cf), the rule the
// protocol sets for topics, matchers and ids.
func ValidText(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return false
		}
		if (r >= 0x80 && r <= 0x9f) || unicode.Is(unicode.Cf, r) {
			return false
		}
		i += n
	}
	return true
}
