package hub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// reference is the plain index: every matcher of every subscriber tested
// on every topic, URL patterns by the library's own Test. Answers are
// remembered, the library being slow.
type reference map[struct {
	k     matcherKey
	topic string
}]bool

func (ref reference) match(ms []*Matcher, topics []string) bool {
	for _, m := range ms {
		for _, t := range topics {
			q := struct {
				k     matcherKey
				topic string
			}{keyOf(m), t}
			ok, seen := ref[q]
			if !seen {
				if m.kind == MatchURLPattern && !m.any {
					ok = libraryTest(m.pattern, t, m.base.raw)
				} else {
					ok = m.Match(t)
				}
				ref[q] = ok
			}
			if ok {
				return true
			}
		}
	}
	return false
}

var selectorPool = []string{
	"https://example.com/books/{id}", "https://example.com/{a}/x", "{s}://example.com/{p}",
	"https://example.com/users/{id}/books/{b}", "https://example.com/books/1", "plain",
	"https://example.com/a/b/c/d/e/f/g/h/i/{x}", "/books/{id}", "https://example.com/users/foo/{?topic}",
}

var exactPool = []string{
	"https://example.com/books/1", "https://example.com/books/2", "plain", "/books/1",
	"https://hub.example/books/1", "https://example.com/users/1/books/2", "https://example.com/x/x",
}

// TestIndexMatchesReference drives the index with random subscriptions,
// unsubscriptions and updates, and checks every update against the plain
// index: each subscriber with a matching matcher is offered the update,
// once, and no other. Topics repeat, so the topic cache is exercised, and
// patterns come and go, so are its invalidation and the routes. At the
// end every table is empty.
func TestIndexMatchesReference(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, seed>>3))

	var x index
	x.init(&Config{MaxPatterns: -1, MaxPatternsPerSubject: -1})

	// Pools of matchers and topics, with patterns built with topics they
	// may match.
	var values []struct {
		kind  MatchKind
		value string
		base  string
	}
	topicPool := slices.Clone(exactPool)
	for range 60 {
		v, own := randomPattern(r)
		base := testBases[0]
		if r.IntN(4) == 0 {
			base = testBases[1]
		}
		if _, err := NewMatcher(MatchURLPattern, v, base); err != nil {
			continue
		}
		values = append(values, struct {
			kind  MatchKind
			value string
			base  string
		}{MatchURLPattern, v, base})
		topicPool = append(topicPool, own[:2]...)
	}
	for _, v := range selectorPool {
		values = append(values, struct {
			kind  MatchKind
			value string
			base  string
		}{MatchSelector, v, testBases[0]})
	}
	for _, v := range exactPool {
		values = append(values, struct {
			kind  MatchKind
			value string
			base  string
		}{MatchExact, v, testBases[0]})
	}
	values = append(values, struct {
		kind  MatchKind
		value string
		base  string
	}{MatchExact, Wildcard, ""})
	topicPool = append(topicPool, "https://example.com/books/{id}", "https://example.com/q/x", "ftp://example.com/p", "https://example.com/users/foo/?topic=a", "https://example.com/a/b/c/d/e/f/g/h/i/j")
	for range 40 {
		topicPool = append(topicPool, randomTopic(r))
	}

	newMatcher := func() *Matcher {
		v := pick(r, values)
		if v.value == Wildcard && r.IntN(8) != 0 {
			v = pick(r, values) // keep the wildcard rare
		}
		var m *Matcher
		var err error
		if r.IntN(2) == 0 {
			m, err = x.table.Get(v.kind, v.value, v.base)
		} else {
			m, err = NewMatcher(v.kind, v.value, v.base)
		}
		if err != nil {
			t.Fatalf("%s %q: %v", v.kind, v.value, err)
		}
		return m
	}

	type sub struct {
		s  *Subscriber
		ms []*Matcher // what it subscribed with
	}
	var live []sub
	ref := make(reference)
	offers, updates := 0, 0
	for op := range 6000 {
		switch k := r.IntN(10); {
		case k < 4 || len(live) == 0:
			ms := make([]*Matcher, 1+r.IntN(4))
			for i := range ms {
				ms[i] = newMatcher()
			}
			if r.IntN(5) == 0 {
				ms = append(ms, ms[0]) // a repeat
			}
			s := &Subscriber{matchers: ms}
			x.mu.Lock()
			// Now and then add alone, which admits outside the budgets.
			if r.IntN(10) > 0 {
				if err := x.admit(s, pick(r, []string{"", "a", "b"})); err != nil {
					t.Fatal(err)
				}
			}
			x.add(s)
			x.mu.Unlock()
			live = append(live, sub{s, slices.Clone(ms)})
		case k < 6:
			i := r.IntN(len(live))
			x.mu.Lock()
			x.remove(live[i].s)
			x.mu.Unlock()
			live = slices.Delete(live, i, i+1)
		default:
			topics := make([]string, 1+r.IntN(2))
			for i := range topics {
				topics[i] = pick(r, topicPool)
			}
			got := make(map[*Subscriber]int)
			x.mu.RLock()
			n := x.match(&Update{Topics: topics}, func(s *Subscriber, _ *Update) { got[s]++ })
			x.mu.RUnlock()
			want := 0
			for _, l := range live {
				match := ref.match(l.ms, topics)
				if match {
					want++
				}
				if c := got[l.s]; (c > 0) != match || c > 1 {
					t.Fatalf("op %d: topics %q, subscriber with %s: offered %d times, reference says %v", op, topics, describe(l.ms), c, match)
				}
			}
			if n != want || len(got) != want {
				t.Fatalf("op %d: match returned %d, offered %d subscribers, want %d", op, n, len(got), want)
			}
			offers += want
			updates++
		}
	}
	if offers < updates {
		t.Fatalf("weak sample: %d offers over %d updates", offers, updates)
	}
	t.Logf("%d updates, %d offers, %d distinct patterns at the end", updates, offers, len(x.patterns))

	x.mu.Lock()
	for _, l := range live {
		x.remove(l.s)
	}
	x.mu.Unlock()
	checkIndexEmpty(t, &x)
}

func describe(ms []*Matcher) string {
	s := ""
	for _, m := range ms {
		s += fmt.Sprintf(" %s:%q", m.kind, m.value)
	}
	return s
}

func checkIndexEmpty(t *testing.T, x *index) {
	t.Helper()
	if n := x.table.Len(); n != 0 {
		t.Errorf("matcher table holds %d matchers", n)
	}
	if len(x.patterns)+len(x.exact)+len(x.wild)+len(x.sets)+len(x.bySlice)+len(x.subjects) != 0 {
		t.Errorf("index not empty: %d patterns, %d exact, %d wild, %d sets, %d by slice, %d subjects",
			len(x.patterns), len(x.exact), len(x.wild), len(x.sets), len(x.bySlice), len(x.subjects))
	}
	ro := &x.routes
	if len(ro.hosts)+len(ro.bases)+len(ro.raw)+len(ro.loose) != 0 {
		t.Errorf("routes not empty: %d hosts, %d bases, %d raw, %d loose", len(ro.hosts), len(ro.bases), len(ro.raw), len(ro.loose))
	}
}

func newTestHub(t testing.TB, cfg Config) *Hub {
	cfg.Engine = &nopEngine{}
	cfg.Heartbeat = -1
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func patterns(t testing.TB, h *Hub, values ...string) []*Matcher {
	ms := make([]*Matcher, len(values))
	for i, v := range values {
		kind := MatchURLPattern
		if v[0] == '=' {
			kind, v = MatchExact, v[1:]
		}
		m, err := h.Matchers().Get(kind, v, testBases[0])
		if err != nil {
			t.Fatal(err)
		}
		ms[i] = m
	}
	return ms
}

func subscribe(h *Hub, subject string, ms []*Matcher) (*Subscriber, error) {
	return h.Subscribe(context.Background(), SubscribeOptions{Matchers: ms, Subject: subject})
}

func TestPatternBudgets(t *testing.T) {
	h := newTestHub(t, Config{MaxPatterns: 5, MaxPatternsPerSubject: 3})
	p := func(i int) string { return fmt.Sprintf("https://example.com/p%d/:id", i) }
	budgetErr := func(err error, which string) {
		t.Helper()
		var be *BudgetError
		if !errors.As(err, &be) || be.Budget != which {
			t.Fatalf("got %v, want a %s budget error", err, which)
		}
	}

	a1, err := subscribe(h, "a", patterns(t, h, p(1), p(2), "=https://example.com/e1", "=*"))
	if err != nil {
		t.Fatal(err)
	}
	// Two new patterns would make four for subject a.
	_, err = subscribe(h, "a", patterns(t, h, p(3), p(4)))
	budgetErr(err, "subject")
	if h.Patterns() != 2 {
		t.Fatalf("a refused subscription changed the index: %d patterns", h.Patterns())
	}
	// Patterns a holds already are free, and so are exact topics.
	a2, err := subscribe(h, "a", patterns(t, h, p(1), p(2), p(3), "=https://example.com/e2", "=https://example.com/e3"))
	if err != nil {
		t.Fatal(err)
	}
	// Subject b has its own budget, and shares a's patterns.
	b1, err := subscribe(h, "b", patterns(t, h, p(1), p(4), p(5)))
	if err != nil {
		t.Fatal(err)
	}
	// The hub holds p1..p5: a sixth is over its budget.
	_, err = subscribe(h, "", patterns(t, h, p(6)))
	budgetErr(err, "hub")
	if got := (&BudgetError{Budget: "hub", Limit: 5, Held: 5, Adding: 1}).Error(); got == "" {
		t.Fatal("empty message")
	}
	// Closing frees the budgets.
	b1.Close()
	c1, err := subscribe(h, "", patterns(t, h, p(6), p(7)))
	if err != nil {
		t.Fatal(err)
	}
	a1.Close()
	a2.Close()
	c1.Close()
	if n, m := h.Patterns(), h.Matchers().Len(); n != 0 || m != 0 {
		t.Fatalf("after every close: %d patterns, %d interned matchers", n, m)
	}
}

// TestPatternBudgetsConcurrent subscribes and closes from several
// goroutines at once with random patterns: the budgets hold at every
// moment a subscription is accepted (checked under the index lock from
// the accepted subscription's point of view) and everything is released
// at the end.
func TestPatternBudgetsConcurrent(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	const hubLimit, subjectLimit = 12, 5
	h := newTestHub(t, Config{MaxPatterns: hubLimit, MaxPatternsPerSubject: subjectLimit})
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, refused := 0, 0
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			var mine []*Subscriber
			for range 400 {
				if len(mine) > 0 && r.IntN(2) == 0 {
					i := r.IntN(len(mine))
					mine[i].Close()
					mine = slices.Delete(mine, i, i+1)
					continue
				}
				vals := make([]string, 1+r.IntN(3))
				for i := range vals {
					vals[i] = fmt.Sprintf("https://example.com/p%d/*", r.IntN(30))
				}
				s, err := subscribe(h, fmt.Sprint(r.IntN(3)), patterns(t, h, vals...))
				var be *BudgetError
				switch {
				case err == nil:
					mine = append(mine, s)
					h.idx.mu.RLock()
					total, held := len(h.idx.patterns), len(h.idx.subjects[h.idx.bySlice[&s.matchers[0]].subject])
					h.idx.mu.RUnlock()
					if total > hubLimit || held > subjectLimit {
						t.Errorf("budget overrun: %d patterns in the hub, %d for the subject", total, held)
					}
					mu.Lock()
					accepted++
					mu.Unlock()
				case errors.As(err, &be):
					mu.Lock()
					refused++
					mu.Unlock()
				default:
					t.Error(err)
				}
			}
			for _, s := range mine {
				s.Close()
			}
		}()
	}
	wg.Wait()
	if accepted == 0 || refused == 0 {
		t.Fatalf("weak sample: %d accepted, %d refused", accepted, refused)
	}
	h.idx.mu.Lock()
	checkIndexEmpty(t, &h.idx)
	h.idx.mu.Unlock()
}

// TestSharedMatchers: a thousand subscribers of one pattern hold one
// compiled copy, referenced once (by their shared set), released with the
// last subscriber.
func TestSharedMatchers(t *testing.T) {
	h := newTestHub(t, Config{})
	subs := make([]*Subscriber, 1000)
	for i := range subs {
		// Each compiles its own copy, as a handler without the table would.
		m, err := NewMatcher(MatchURLPattern, "https://example.com/books/:id", testBases[0])
		if err != nil {
			t.Fatal(err)
		}
		if subs[i], err = subscribe(h, "", []*Matcher{m}); err != nil {
			t.Fatal(err)
		}
	}
	m0 := subs[0].matchers[0]
	for _, s := range subs {
		if len(s.matchers) != 1 || s.matchers[0] != m0 || &s.matchers[0] != &subs[0].matchers[0] {
			t.Fatal("subscribers of one pattern do not share their matchers")
		}
	}
	if n, refs := h.Matchers().Len(), h.Matchers().Refs(m0); n != 1 || refs != 1 {
		t.Fatalf("table: %d matchers, %d references", n, refs)
	}
	if g, err := h.Matchers().Get(MatchURLPattern, "https://example.com/books/:id", testBases[0]); err != nil || g != m0 {
		t.Fatal("Get does not return the shared copy")
	}
	for _, s := range subs {
		s.Close()
	}
	if n := h.Matchers().Len(); n != 0 {
		t.Fatalf("table holds %d matchers after the last subscriber left", n)
	}
}

// TestMemoryPerSubscriber: what one more subscriber costs the hub when it
// names 64 patterns that others name too, against one that names a single
// exact topic that others name too. The shared set makes them equal.
func TestMemoryPerSubscriber(t *testing.T) {
	measure := func(values []string) float64 {
		h := newTestHub(t, Config{})
		ms := patterns(t, h, values...)
		const warm, n = 10, 3000
		subs := make([]*Subscriber, 0, warm+n)
		add := func(k int) {
			for range k {
				s, err := subscribe(h, "", ms)
				if err != nil {
					t.Fatal(err)
				}
				subs = append(subs, s)
			}
		}
		add(warm)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		add(n)
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(after.HeapAlloc-before.HeapAlloc) / n
		for _, s := range subs {
			s.Close()
		}
		return per
	}
	exact := measure([]string{"=https://example.com/t"})
	vals := make([]string, 64)
	for i := range vals {
		vals[i] = fmt.Sprintf("https://example.com/p%d/:id", i)
	}
	shared := measure(vals)
	t.Logf("per subscriber: %.0f B with one exact topic, %.0f B with 64 shared patterns (%.2fx)", exact, shared, shared/exact)
	if shared > 1.2*exact {
		t.Fatalf("a subscriber with 64 shared patterns costs %.2fx one with an exact topic", shared/exact)
	}
}
