package hub

import (
	"errors"
	"fmt"
	"regexp"
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

// Matcher tests topics. It is immutable and safe for concurrent use.
//
// Every kind matches in time linear in the topic's length: URL patterns and
// URI templates compile to Go's RE2 regular expressions, which never
// backtrack, so a crafted pattern cannot stall the hub.
type Matcher struct {
	kind    MatchKind
	value   string
	base    string
	any     bool
	pattern *urlpattern.URLPattern
	tmpl    *regexp.Regexp
}

// Errors returned by NewMatcher.
var (
	ErrMatcherText    = errors.New("matcher contains invalid UTF-8, control or format characters")
	ErrMatcherTooLong = fmt.Errorf("matcher is longer than %d bytes", MaxMatcherLen)
)

// NewMatcher compiles value as a matcher of the given kind. base is the hub
// URL, against which relative URL patterns and relative topics resolve.
func NewMatcher(kind MatchKind, value, base string) (*Matcher, error) {
	if len(value) > MaxMatcherLen {
		return nil, ErrMatcherTooLong
	}
	if !ValidText(value) {
		return nil, ErrMatcherText
	}
	m := &Matcher{kind: kind, value: value, base: base, any: value == Wildcard}
	if m.any {
		return m, nil
	}
	switch kind {
	case MatchExact:
	case MatchURLPattern:
		p, err := compileURLPattern(value, base)
		if err != nil {
			return nil, fmt.Errorf("invalid URL pattern: %w", err)
		}
		m.pattern = p
	case MatchSelector:
		// A selector that is not a valid template still matches itself.
		if t, err := uritemplate.New(value); err == nil && len(t.Varnames()) > 0 {
			re, err := templateRegexp(t)
			if err != nil {
				return nil, fmt.Errorf("invalid URI template: %w", err)
			}
			m.tmpl = re
		}
	default:
		return nil, fmt.Errorf("unknown matcher kind %d", kind)
	}
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

// Match reports whether topic matches.
func (m *Matcher) Match(topic string) bool {
	switch {
	case m.any:
		return true
	case m.kind == MatchURLPattern:
		return m.testPattern(topic)
	case m.value == topic:
		return true
	case m.tmpl != nil:
		return m.tmpl.MatchString(topic)
	}
	return false
}

func (m *Matcher) testPattern(topic string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return m.pattern.Test(topic, m.base)
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
