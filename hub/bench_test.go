package hub

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/herald-hub/herald/sse"
)

// nopEngine is the smallest Engine: enough for the dispatch benchmarks,
// which drive dispatch directly.
type nopEngine struct{ seq atomic.Uint64 }

func (e *nopEngine) Listen(func(Batch)) (Position, error) { return Position{Epoch: 1}, nil }
func (e *nopEngine) Append(_ context.Context, u *Update) error {
	u.Seq = e.seq.Add(1)
	return nil
}
func (e *nopEngine) Lookup(context.Context, string) (Position, bool, error) {
	return Position{}, false, nil
}
func (e *nopEngine) Read(context.Context, Position, int) (Range, error) { return Range{}, nil }

// benchFanout registers n live subscribers (not served: their queues are
// drained by the benchmark itself) and measures dispatching one update to
// all of them.
func benchFanout(b *testing.B, n int, matcher func(i int) *Matcher, topic string) {
	benchFanoutTopics(b, n, matcher, []string{topic})
}

// benchFanoutTopics is benchFanout with updates cycling through topics.
func benchFanoutTopics(b *testing.B, n int, matcher func(i int) *Matcher, topicList []string) {
	h, err := New(Config{Engine: &nopEngine{}, QueueBytes: 1 << 30, Heartbeat: -1, MaxPatterns: -1, MaxPatternsPerSubject: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	subs := make([]*Subscriber, n)
	for i := range subs {
		s, err := h.Subscribe(context.Background(), SubscribeOptions{Matchers: []*Matcher{matcher(i)}})
		if err != nil {
			b.Fatal(err)
		}
		subs[i] = s
	}
	frame, _ := sse.Encode(&sse.Event{ID: "x", Data: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"})
	updates := make([]Update, 256)
	topics := make([][]string, len(topicList))
	for i, t := range topicList {
		topics[i] = []string{t}
	}
	seq := uint64(0)
	drain := func() {
		for _, s := range subs {
			s.mu.Lock()
			clear(s.queue)
			s.queue, s.queued = s.queue[:0], 0
			s.mu.Unlock()
		}
	}
	// Warm up: queues grow to their working size once, as they do in a
	// running hub, where the writer swaps and reuses two buffers.
	for i := range updates {
		seq++
		updates[i] = Update{Seq: seq, ID: "x", Topics: topics[i%len(topics)], Frame: frame}
		h.dispatch(&updates[i])
	}
	drain()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		u := &updates[i%len(updates)]
		seq++
		*u = Update{Seq: seq, ID: "x", Topics: topics[i%len(topics)], Frame: frame}
		h.dispatch(u)
		if i%len(updates) == len(updates)-1 {
			b.StopTimer()
			drain()
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/subscriber")
	for _, s := range subs {
		s.Close()
	}
}

func mustMatcher(kind MatchKind, v string) *Matcher {
	m, err := NewMatcher(kind, v, "https://hub.example/.well-known/mercure")
	if err != nil {
		panic(err)
	}
	return m
}

// BenchmarkFanout dispatches one update to 10,000 subscribers. allocs/op
// must stay 0: fan-out allocates nothing per subscriber.
func BenchmarkFanout(b *testing.B) {
	const n = 10_000
	b.Run("exact/10000", func(b *testing.B) {
		m := mustMatcher(MatchExact, "https://example.com/t")
		benchFanout(b, n, func(int) *Matcher { return m }, "https://example.com/t")
	})
	b.Run("wildcard/10000", func(b *testing.B) {
		m := mustMatcher(MatchExact, "*")
		benchFanout(b, n, func(int) *Matcher { return m }, "https://example.com/t")
	})
	b.Run("urlpattern-shared/10000", func(b *testing.B) {
		benchFanout(b, n, func(int) *Matcher { return mustMatcher(MatchURLPattern, "https://example.com/:t") }, "https://example.com/t")
	})
	b.Run("exact-1-of-10000-topics", func(b *testing.B) {
		benchFanout(b, n, func(i int) *Matcher { return mustMatcher(MatchExact, fmt.Sprint("https://example.com/", i)) }, "https://example.com/7")
	})

	// 1,000 subscribers with one pattern each: the same one, or 1,000
	// distinct ones. Distinct patterns cost a test each per update,
	// unless the host rules them out or the topic's answer is cached.
	const m = 1000
	distinct := func(format string) func(int) *Matcher {
		return func(i int) *Matcher { return mustMatcher(MatchURLPattern, fmt.Sprintf(format, i)) }
	}
	// A fresh topic for every update, so that no answer is cached.
	fresh := make([]string, 1<<16)
	for i := range fresh {
		fresh[i] = fmt.Sprintf("https://example.com/x%d/p7", i)
	}
	shared := func(int) *Matcher { return mustMatcher(MatchURLPattern, "https://example.com/:t/p7") }
	b.Run("urlpattern-1-shared/1000", func(b *testing.B) {
		benchFanout(b, m, shared, "https://example.com/x/p7")
	})
	b.Run("urlpattern-1-shared-fresh-topics/1000", func(b *testing.B) {
		benchFanoutTopics(b, m, shared, fresh)
	})
	b.Run("urlpattern-1000-distinct-1-match/1000", func(b *testing.B) {
		benchFanout(b, m, distinct("https://example.com/:t/p%d"), "https://example.com/x/p7")
	})
	b.Run("urlpattern-1000-distinct-1-match-fresh-topics/1000", func(b *testing.B) {
		benchFanoutTopics(b, m, distinct("https://example.com/:t/p%d"), fresh)
	})
	b.Run("urlpattern-1000-distinct-all-match/1000", func(b *testing.B) {
		benchFanout(b, m, distinct("https://example.com/:t%d/*"), "https://example.com/x/p7")
	})
	b.Run("urlpattern-1000-distinct-all-match-fresh-topics/1000", func(b *testing.B) {
		benchFanoutTopics(b, m, distinct("https://example.com/:t%d/*"), fresh)
	})
	b.Run("urlpattern-1000-distinct-other-host-fresh-topics/1000", func(b *testing.B) {
		benchFanoutTopics(b, m, distinct("https://other.example/:t/p%d"), fresh)
	})
}

func BenchmarkMatch(b *testing.B) {
	topic := "https://example.com/books/1234"
	for _, c := range []struct {
		name string
		m    *Matcher
	}{
		{"exact", mustMatcher(MatchExact, "https://example.com/books/1234")},
		{"urlpattern", mustMatcher(MatchURLPattern, "https://example.com/books/:id")},
		{"uritemplate", mustMatcher(MatchSelector, "https://example.com/books/{id}")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !c.m.Match(topic) {
					b.Fatal("no match")
				}
			}
		})
	}
}

// BenchmarkFanoutBaseline is the plain broadcaster herald is measured
// against: every subscriber's matcher is tested, the frame is encoded per
// subscriber, and a copy goes down a channel per subscriber.
func BenchmarkFanoutBaseline(b *testing.B) {
	const n = 10_000
	run := func(b *testing.B, matcher func(i int) *Matcher, topic string) {
		type sub struct {
			m  *Matcher
			ch chan []byte
		}
		subs := make([]sub, n)
		for i := range subs {
			subs[i] = sub{matcher(i), make(chan []byte, 512)}
		}
		ev := sse.Event{ID: "x", Data: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			for _, s := range subs {
				if !s.m.Match(topic) {
					continue
				}
				frame, _ := sse.Encode(&ev)
				select {
				case s.ch <- frame:
				default:
				}
			}
			if i%256 == 255 {
				b.StopTimer()
				for _, s := range subs {
					for len(s.ch) > 0 {
						<-s.ch
					}
				}
				b.StartTimer()
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/subscriber")
	}
	b.Run("exact/10000", func(b *testing.B) {
		m := mustMatcher(MatchExact, "https://example.com/t")
		run(b, func(int) *Matcher { return m }, "https://example.com/t")
	})
	b.Run("exact-1-of-10000-topics", func(b *testing.B) {
		run(b, func(i int) *Matcher { return mustMatcher(MatchExact, fmt.Sprint("https://example.com/", i)) }, "https://example.com/7")
	})
}
