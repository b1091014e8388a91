package hub

import "sync"

// Matchers is a table of compiled matchers shared by reference count, so
// that a thousand subscriptions or tokens naming one pattern hold one
// compiled copy of it (a URL pattern's costs about 8 KB). Each hub has one
// (Hub.Matchers); the token validator can share it. It is safe for
// concurrent use.
//
// Get compiles or finds a matcher without taking a reference; Acquire
// takes one on the table's copy and Release gives it back. Releasing the
// last reference only removes the matcher from the table: a Matcher stays
// valid for as long as anything points at it.
type Matchers struct {
	mu      sync.Mutex
	entries map[matcherKey]*internEntry
	// bases holds each base URL parsed once. Bases come from
	// configuration (the hub URL), not from clients, so it stays small.
	bases map[string]*baseURL
}

// matcherKey identifies what a matcher matches: the base only matters to
// URL patterns.
type matcherKey struct {
	kind  MatchKind
	value string
	base  string
}

type internEntry struct {
	m    *Matcher
	refs int
}

func keyOf(m *Matcher) matcherKey { return matcherKey{m.kind, m.value, m.baseText()} }

func makeKey(kind MatchKind, value, base string) matcherKey {
	if kind != MatchURLPattern || value == Wildcard {
		base = ""
	}
	return matcherKey{kind, value, base}
}

// NewMatchers returns an empty table.
func NewMatchers() *Matchers {
	return &Matchers{entries: make(map[matcherKey]*internEntry), bases: make(map[string]*baseURL)}
}

// Get returns the table's matcher for kind, value and base if it has one,
// else a newly compiled one (see NewMatcher), which it does not keep: a
// matcher enters the table when it is acquired. Compiling happens outside
// the table's lock.
func (t *Matchers) Get(kind MatchKind, value, base string) (*Matcher, error) {
	t.mu.Lock()
	if e := t.entries[makeKey(kind, value, base)]; e != nil {
		t.mu.Unlock()
		return e.m, nil
	}
	var b *baseURL
	if kind == MatchURLPattern {
		if b = t.bases[base]; b == nil {
			b = newBaseURL(base)
			t.bases[base] = b
		}
	}
	t.mu.Unlock()
	return newMatcher(kind, value, base, b)
}

// Acquire takes a reference on the table's matcher equal to m (same kind,
// value and base) and returns it: m itself if the table had none.
func (t *Matchers) Acquire(m *Matcher) *Matcher {
	k := keyOf(m)
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.entries[k]; e != nil {
		e.refs++
		return e.m
	}
	t.entries[k] = &internEntry{m: m, refs: 1}
	return m
}

// Release gives back a reference taken by Acquire on m. The last one
// removes m from the table. Releasing a matcher the table does not hold
// does nothing.
func (t *Matchers) Release(m *Matcher) {
	k := keyOf(m)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[k]
	if e == nil || e.m != m {
		return
	}
	if e.refs--; e.refs == 0 {
		delete(t.entries, k)
	}
}

// Len returns the number of matchers in the table.
func (t *Matchers) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// Refs returns the number of references held on m in the table, 0 when
// the table does not hold m.
func (t *Matchers) Refs(m *Matcher) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.entries[keyOf(m)]; e != nil && e.m == m {
		return e.refs
	}
	return 0
}
