package hub

import (
	"cmp"
	"encoding/binary"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
)

// index maps topics and matchers to subscribers, so that a publish touches
// only the subscribers that can match: exact topics by map lookup, the
// wildcard as one set, and each distinct pattern at most once per update
// whatever the number of subscribers sharing it.
//
// Subscribers are filed by matcher set: the subscriptions of one subject
// with the same matchers share one matcherSet, which holds the matchers
// (interned in the hub's Matchers table) and is what the index files under
// each of them. A subscriber costs one entry in its set however many
// matchers it has, and a set is offered an update once even when several
// of its matchers match.
//
// Patterns are not all tested for every update. Each pattern group is
// filed by route (route.go, from what urlpattern.go reads in the compiled
// expressions): URL patterns with a literal protocol and host under that
// host and the literal start of their path, selectors under the literal
// start of their template; only the rest is tested for every topic. The
// groups a topic matched are remembered (topicCache) until a new pattern
// comes. Budgets bound the number of distinct patterns (budget.go), so
// that nothing a client subscribes to makes the per-update work unbounded.
type index struct {
	mu sync.RWMutex

	table  *Matchers
	limits patternLimits
	seed   maphash.Seed

	exact    map[string]map[*matcherSet]struct{}
	wild     map[*matcherSet]struct{}
	patterns map[matcherKey]*patternGroup
	routes   routes

	sets    map[setKey][]*matcherSet  // for interning: by subject and hash
	bySlice map[**Matcher]*matcherSet // a subscriber's set, from its matchers
	// subjects counts, for each subject, the sets holding each pattern:
	// its keys are the subject's distinct patterns, for its budget.
	subjects map[string]map[matcherKey]int

	// Dispatcher state. match runs with mu read-locked; dmu keeps it
	// sound should two goroutines ever match at once.
	dmu     sync.Mutex
	gen     uint64
	cache   topicCache
	scratch matchScratch
}

// matcherSet is a set of matchers held by subscriptions of one subject.
type matcherSet struct {
	subject string
	ms      []*Matcher // sorted by key, distinct, interned
	key     setKey
	subs    map[*Subscriber]struct{}
	gen     uint64 // the last match that offered to subs (dispatcher only)
}

type setKey struct {
	subject string
	hash    uint64
}

// patternGroup is one distinct pattern and the sets that hold it.
type patternGroup struct {
	m    *Matcher
	sets map[*matcherSet]struct{}
	dead bool // removed: cached results skip it
}

func (x *index) init(cfg *Config) {
	x.exact = make(map[string]map[*matcherSet]struct{})
	x.wild = make(map[*matcherSet]struct{})
	x.patterns = make(map[matcherKey]*patternGroup)
	x.routes.init()
	x.sets = make(map[setKey][]*matcherSet)
	x.bySlice = make(map[**Matcher]*matcherSet)
	x.subjects = make(map[string]map[matcherKey]int)
	x.seed = maphash.MakeSeed()
	x.table = cfg.Matchers
	if x.table == nil {
		x.table = NewMatchers()
	}
	x.limits = patternLimits{
		hub:     limitOf(cfg.MaxPatterns, DefaultMaxPatterns),
		subject: limitOf(cfg.MaxPatternsPerSubject, DefaultMaxPatternsPerSubject),
	}
	x.cache.init()
}

// admit finds or makes the set of s's matchers for subject, within the
// pattern budgets, and points s.matchers at the set's shared slice. Call
// it with mu locked and, when it succeeds, add(s) in the same critical
// section: together they register s atomically with the budget check.
// On error nothing changed.
func (x *index) admit(s *Subscriber, subject string) error {
	set, err := x.setFor(s.matchers, subject, true)
	if err != nil {
		return err
	}
	if set == nil {
		s.matchers = nil
	} else {
		s.matchers = set.ms
	}
	return nil
}

// add files s under its set. A subscriber that was not admitted gets its
// set here, outside the budgets.
func (x *index) add(s *Subscriber) {
	set := x.setOf(s)
	if set == nil {
		if set, _ = x.setFor(s.matchers, "", false); set == nil {
			s.matchers = nil
			return
		}
		s.matchers = set.ms
	}
	set.subs[s] = struct{}{}
}

// remove unfiles s; its set goes when its last subscriber does.
func (x *index) remove(s *Subscriber) {
	set := x.setOf(s)
	if set == nil {
		return
	}
	delete(set.subs, s)
	if len(set.subs) == 0 {
		x.unregister(set)
	}
}

func (x *index) setOf(s *Subscriber) *matcherSet {
	if len(s.matchers) == 0 {
		return nil
	}
	return x.bySlice[&s.matchers[0]]
}

// setFor returns the registered set of subject with the matchers ms (in
// any order, repeats allowed), registering a new one if needed. A new set
// must fit the budgets when budget is set. It returns nil for no matchers.
func (x *index) setFor(ms []*Matcher, subject string, budget bool) (*matcherSet, error) {
	ms = canonical(ms)
	if len(ms) == 0 {
		return nil, nil
	}
	k := setKey{subject, x.hash(subject, ms)}
	for _, set := range x.sets[k] {
		if sameKeys(set.ms, ms) {
			return set, nil
		}
	}
	if budget {
		if err := x.fits(subject, ms); err != nil {
			return nil, err
		}
	}
	for i, m := range ms {
		ms[i] = x.table.Acquire(m)
	}
	set := &matcherSet{subject: subject, ms: ms, key: k, subs: make(map[*Subscriber]struct{})}
	x.register(set)
	return set, nil
}

// canonical returns a sorted copy of ms without repeats (by key).
func canonical(ms []*Matcher) []*Matcher {
	out := make([]*Matcher, 0, len(ms))
	for _, m := range ms {
		if m != nil {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b *Matcher) int { return compareKeys(keyOf(a), keyOf(b)) })
	return slices.CompactFunc(out, func(a, b *Matcher) bool { return keyOf(a) == keyOf(b) })
}

func compareKeys(a, b matcherKey) int {
	if c := cmp.Compare(a.kind, b.kind); c != 0 {
		return c
	}
	if c := strings.Compare(a.value, b.value); c != 0 {
		return c
	}
	return strings.Compare(a.base, b.base)
}

func sameKeys(a, b []*Matcher) bool {
	return slices.EqualFunc(a, b, func(x, y *Matcher) bool { return keyOf(x) == keyOf(y) })
}

func (x *index) hash(subject string, ms []*Matcher) uint64 {
	var h maphash.Hash
	h.SetSeed(x.seed)
	var n [8]byte
	str := func(s string) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.WriteString(s)
	}
	str(subject)
	for _, m := range ms {
		k := keyOf(m)
		h.WriteByte(byte(k.kind))
		str(k.value)
		str(k.base)
	}
	return h.Sum64()
}

// fits checks that a new set of subject with matchers ms stays within the
// pattern budgets.
func (x *index) fits(subject string, ms []*Matcher) error {
	held := x.subjects[subject]
	newHub, newSubject := 0, 0
	for _, m := range ms {
		if !m.IsPattern() {
			continue
		}
		k := keyOf(m)
		if _, ok := x.patterns[k]; !ok {
			newHub++
		}
		if _, ok := held[k]; !ok {
			newSubject++
		}
	}
	if l := x.limits.subject; l >= 0 && newSubject > 0 && len(held)+newSubject > l {
		return &BudgetError{Budget: "subject", Limit: l, Held: len(held), Adding: newSubject}
	}
	if l := x.limits.hub; l >= 0 && newHub > 0 && len(x.patterns)+newHub > l {
		return &BudgetError{Budget: "hub", Limit: l, Held: len(x.patterns), Adding: newHub}
	}
	return nil
}

func (x *index) register(set *matcherSet) {
	x.sets[set.key] = append(x.sets[set.key], set)
	x.bySlice[&set.ms[0]] = set
	held := x.subjects[set.subject]
	for _, m := range set.ms {
		switch {
		case m.any:
			x.wild[set] = struct{}{}
		case m.literal():
			sets := x.exact[m.value]
			if sets == nil {
				sets = make(map[*matcherSet]struct{})
				x.exact[m.value] = sets
			}
			sets[set] = struct{}{}
		default:
			k := keyOf(m)
			g := x.patterns[k]
			if g == nil {
				g = &patternGroup{m: m, sets: make(map[*matcherSet]struct{})}
				x.patterns[k] = g
				x.routes.add(g)
				// A cached answer does not know the new pattern.
				x.cache.clear()
			}
			g.sets[set] = struct{}{}
			if held == nil {
				held = make(map[matcherKey]int)
				x.subjects[set.subject] = held
			}
			held[k]++
		}
	}
}

func (x *index) unregister(set *matcherSet) {
	held := x.subjects[set.subject]
	for _, m := range set.ms {
		switch {
		case m.any:
			delete(x.wild, set)
			if len(x.wild) == 0 {
				// Go maps never shrink: drop the storage a crowd grew.
				x.wild = make(map[*matcherSet]struct{})
			}
		case m.literal():
			if sets := x.exact[m.value]; sets != nil {
				delete(sets, set)
				if len(sets) == 0 {
					delete(x.exact, m.value)
				}
			}
		default:
			k := keyOf(m)
			if g := x.patterns[k]; g != nil {
				delete(g.sets, set)
				if len(g.sets) == 0 {
					delete(x.patterns, k)
					x.routes.remove(g)
					g.dead = true
				}
			}
			if held[k]--; held[k] <= 0 {
				delete(held, k)
			}
		}
	}
	if len(held) == 0 {
		delete(x.subjects, set.subject)
	}
	same := slices.DeleteFunc(x.sets[set.key], func(o *matcherSet) bool { return o == set })
	if len(same) == 0 {
		delete(x.sets, set.key)
	} else {
		x.sets[set.key] = same
	}
	delete(x.bySlice, &set.ms[0])
	for _, m := range set.ms {
		x.table.Release(m)
	}
}

// match calls fn once for every subscriber that has a matcher for one of
// u's topics, and returns how many calls it made. Call it with mu
// read-locked. The dispatcher calls it; a topic is parsed at most once per
// base URL (in practice, once) whatever the number of URL patterns.
func (x *index) match(u *Update, fn func(*Subscriber, *Update)) int {
	x.dmu.Lock()
	defer x.dmu.Unlock()
	x.gen++
	o := offering{gen: x.gen, u: u, fn: fn}
	for _, t := range u.Topics {
		for set := range x.exact[t] {
			o.offer(set)
		}
	}
	for set := range x.wild {
		o.offer(set)
	}
	if len(x.patterns) > 0 {
		for _, t := range u.Topics {
			for _, g := range x.groupsFor(t) {
				if g.dead {
					continue
				}
				for set := range g.sets {
					o.offer(set)
				}
			}
		}
	}
	return o.n
}

type offering struct {
	gen uint64
	u   *Update
	fn  func(*Subscriber, *Update)
	n   int
}

func (o *offering) offer(set *matcherSet) {
	if set.gen == o.gen {
		return
	}
	set.gen = o.gen
	o.n += len(set.subs)
	for s := range set.subs {
		o.fn(s, o.u)
	}
}

// groupsFor returns the pattern groups topic matches (some maybe dead),
// from the cache or by testing the groups its routes lead to. The slice is
// valid until the next call.
func (x *index) groupsFor(topic string) []*patternGroup {
	if gs, ok := x.cache.get(topic); ok {
		return gs
	}
	gs := x.evaluate(topic)
	x.cache.put(topic, gs)
	return gs
}

// evaluate tests topic against every group it may match: the loose
// groups, the groups filed under its host and path for each base URL,
// and the selectors filed under its beginning. Each group is filed in
// one place, so it is tested once.
func (x *index) evaluate(topic string) []*patternGroup {
	sc := &x.scratch
	sc.reset()
	res := sc.groups[:0]
	for g := range x.routes.loose {
		var ok bool
		if g.m.kind == MatchURLPattern {
			ok = g.m.matchParsed(topic, sc.parsed(g.m.base, topic))
		} else {
			ok = g.m.Match(topic)
		}
		if ok {
			res = append(res, g)
		}
	}
	for raw, ref := range x.routes.bases {
		pt := sc.parsed(ref.b, topic)
		if !pt.ok {
			continue
		}
		t := x.routes.hosts[hostKey{raw, pt.c[compProtocol], pt.c[compHostname]}]
		res = t.collect(pt.c[compPathname], pathRouteSlashes, res, func(g *patternGroup) bool { return g.m.matchParsed(topic, pt) })
	}
	res = x.routes.raw.collect(topic, rawRouteSlashes, res, func(g *patternGroup) bool { return g.m.Match(topic) })
	sc.groups = res
	return res
}

// matchScratch is the dispatcher's reusable state for one topic.
type matchScratch struct {
	groups []*patternGroup
	parses []*parsedTopic // by base text, for the topic being evaluated
	bases  []string
}

func (sc *matchScratch) reset() {
	clear(sc.parses)
	sc.parses, sc.bases = sc.parses[:0], sc.bases[:0]
}

// parsed returns the topic parsed against b, parsing it once per base text.
func (sc *matchScratch) parsed(b *baseURL, topic string) *parsedTopic {
	for i, raw := range sc.bases {
		if raw == b.raw {
			return sc.parses[i]
		}
	}
	pt := b.lookup(topic)
	sc.bases, sc.parses = append(sc.bases, b.raw), append(sc.parses, pt)
	return pt
}

// topicCache remembers which pattern groups each recent topic matched.
// It is emptied when a pattern group is created; a removed group is marked
// dead and skipped. It is bounded in topics, in bytes of topics and in
// group pointers; an arbitrary entry makes room.
type topicCache struct {
	m     map[string][]*patternGroup
	refs  int
	bytes int
}

const (
	cacheTopics = 4096
	cacheBytes  = 1 << 20
	cacheRefs   = 1 << 16
)

func (c *topicCache) init() { c.m = make(map[string][]*patternGroup) }

func (c *topicCache) get(topic string) ([]*patternGroup, bool) {
	gs, ok := c.m[topic]
	return gs, ok
}

func (c *topicCache) put(topic string, gs []*patternGroup) {
	if len(gs) > cacheRefs/16 || len(topic) > cacheBytes/16 {
		return
	}
	for len(c.m) > 0 && (len(c.m) >= cacheTopics || c.bytes+len(topic) > cacheBytes || c.refs+len(gs) > cacheRefs) {
		for k, v := range c.m {
			delete(c.m, k)
			c.bytes -= len(k)
			c.refs -= len(v)
			break
		}
	}
	// The topic may share memory with a large request body: copy it.
	c.m[strings.Clone(topic)] = slices.Clone(gs)
	c.bytes += len(topic)
	c.refs += len(gs)
}

func (c *topicCache) clear() {
	clear(c.m)
	c.bytes, c.refs = 0, 0
}
