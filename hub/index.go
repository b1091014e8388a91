package hub

import "sync"

// index maps topics and matchers to subscribers, so that a publish touches
// only the subscribers that can match: exact topics by map lookup, the
// wildcard as one set, and each distinct pattern once per update whatever
// the number of subscribers sharing it.
type index struct {
	mu       sync.RWMutex
	exact    map[string]map[*Subscriber]struct{}
	wild     map[*Subscriber]struct{}
	patterns map[patternKey]*patternGroup
}

type patternKey struct {
	kind  MatchKind
	value string
}

type patternGroup struct {
	m    *Matcher
	subs map[*Subscriber]struct{}
}

func (x *index) init() {
	x.exact = make(map[string]map[*Subscriber]struct{})
	x.wild = make(map[*Subscriber]struct{})
	x.patterns = make(map[patternKey]*patternGroup)
}

// literal reports whether m matches exactly its own value and nothing else.
func literal(m *Matcher) bool {
	return m.kind == MatchExact || (m.kind == MatchSelector && m.tmpl == nil)
}

func (x *index) add(s *Subscriber) {
	for _, m := range s.matchers {
		switch {
		case m.any:
			x.wild[s] = struct{}{}
		case literal(m):
			set := x.exact[m.value]
			if set == nil {
				set = make(map[*Subscriber]struct{})
				x.exact[m.value] = set
			}
			set[s] = struct{}{}
		default:
			k := patternKey{m.kind, m.value}
			g := x.patterns[k]
			if g == nil {
				g = &patternGroup{m: m, subs: make(map[*Subscriber]struct{})}
				x.patterns[k] = g
			}
			g.subs[s] = struct{}{}
		}
	}
}

func (x *index) remove(s *Subscriber) {
	for _, m := range s.matchers {
		switch {
		case m.any:
			delete(x.wild, s)
			if len(x.wild) == 0 {
				// Go maps never shrink: drop the storage a crowd grew.
				x.wild = make(map[*Subscriber]struct{})
			}
		case literal(m):
			if set := x.exact[m.value]; set != nil {
				delete(set, s)
				if len(set) == 0 {
					delete(x.exact, m.value)
				}
			}
		default:
			k := patternKey{m.kind, m.value}
			if g := x.patterns[k]; g != nil {
				delete(g.subs, s)
				if len(g.subs) == 0 {
					delete(x.patterns, k)
				}
			}
		}
	}
}

// match calls fn for every subscriber that has a matcher for one of u's
// topics, once per matcher that matches (offer ignores repeats), and
// returns how many calls it made. Call it with mu read-locked.
func (x *index) match(u *Update, fn func(*Subscriber, *Update)) int {
	n := len(x.wild)
	for _, t := range u.Topics {
		subs := x.exact[t]
		n += len(subs)
		for s := range subs {
			fn(s, u)
		}
	}
	for s := range x.wild {
		fn(s, u)
	}
	for _, g := range x.patterns {
		if g.m.MatchAny(u.Topics) {
			n += len(g.subs)
			for s := range g.subs {
				fn(s, u)
			}
		}
	}
	return n
}
