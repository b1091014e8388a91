package redis

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/internal/redistest"
)

// BenchmarkAppend is where one Redis stream saturates: 64 appenders (and
// 4, whose batches are small) as fast as Redis acknowledges, grouped by the engine's workers, on a log
// kept full (every append also trims), with one node's feed reading it
// all back. It reports updates/s and Redis's CPU per update.
//
// Retention is by count, and by age too as herald's defaults have it
// (nothing old enough to drop: the front entry is only looked at). It also
// reports the stream's memory per entry retained at the end.
func BenchmarkAppend(b *testing.B) {
	for _, par := range []int{2, 32} { // 4 and 64 appenders on 2 cores
		b.Run(fmt.Sprintf("appenders=%d", 2*par), func(b *testing.B) { benchAppend(b, par, false) })
	}
}

// BenchmarkAppendPresenceChurn is BenchmarkAppend under a churn of
// subscribers: nine updates in ten are presence updates, of which the log
// keeps the last thousand, deleted from the middle of the stream as new
// ones come, while the others stay. It should cost about what
// BenchmarkAppend does, whose appends drop as many from the front.
func BenchmarkAppendPresenceChurn(b *testing.B) {
	for _, par := range []int{2, 32} {
		b.Run(fmt.Sprintf("appenders=%d", 2*par), func(b *testing.B) { benchAppend(b, par, true) })
	}
}

func benchAppend(b *testing.B, parallelism int, churn bool) {
	srv := redistest.Start(b, redistest.Options{})
	e, err := Open(b.Context(), srv.URL(), Options{Prefix: "bench", Retention: hub.Retention{MaxCount: 10_000, MaxAge: time.Hour, MaxPresence: 1_000}, Grace: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	var fed atomic.Int64
	if _, err := e.Listen(func(x hub.Batch) { fed.Add(int64(len(x.Updates))) }); err != nil {
		b.Fatal(err)
	}
	frame := []byte("id: x\ndata: " + strings.Repeat("x", 160) + "\n\n")
	var n atomic.Int64
	cpu0 := redisCPU(b, srv)
	b.SetParallelism(parallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			u := &hub.Update{ID: "urn:uuid:bench-" + strconv.FormatInt(i, 10), Topics: []string{"https://example.com/bench"}, Time: time.Now(), Frame: frame,
				Presence: churn && i%10 != 0}
			if err := e.Append(b.Context(), u); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	total := n.Load()
	b.ReportMetric(float64(total)/elapsed.Seconds(), "updates/s")
	b.ReportMetric((redisCPU(b, srv)-cpu0)/float64(total)*1e6, "redis-µs/update")
	b.ReportMetric(float64(fed.Load())/float64(total), "fed/appended")
	// Entries deleted from the middle of a stream keep their room until
	// every entry of their node is gone.
	mem, err1 := e.rdb.MemoryUsage(b.Context(), e.keys.log, 0).Result()
	kept, err2 := e.rdb.XLen(b.Context(), e.keys.log).Result()
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(mem)/float64(max(kept, 1)), "stream-B/entry")
}

// redisCPU is the CPU seconds Redis has spent, from INFO cpu.
func redisCPU(b *testing.B, srv *redistest.Server) float64 {
	var s float64
	for _, f := range []string{"used_cpu_sys", "used_cpu_user"} {
		v, err := strconv.ParseFloat(srv.Info(b, "cpu", f), 64)
		if err != nil {
			b.Fatal(fmt.Errorf("INFO cpu %s: %w", f, err))
		}
		s += v
	}
	return s
}

// BenchmarkPresenceList is what listing every node's subscriptions costs,
// up to DefaultMaxPresence of them over 8 nodes: the time per list, and
// Redis's CPU per list (spread over a round trip a page, between which
// Redis serves the other clients).
func BenchmarkPresenceList(b *testing.B) {
	for _, subs := range []int{1_000, DefaultMaxPresence} {
		b.Run(fmt.Sprintf("subscriptions=%d", subs), func(b *testing.B) { benchPresenceList(b, subs) })
	}
}

func benchPresenceList(b *testing.B, subs int) {
	const nodes = 8
	srv := redistest.Start(b, redistest.Options{})
	e, err := Open(b.Context(), srv.URL(), Options{Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	// A subscription's document as the hub records it: JSON-LD of a
	// topic, a subscriber and a few payload fields.
	doc := []byte(`{"@context":"https://mercure.rocks/","id":"/.well-known/mercure/subscriptions/` + strings.Repeat("t", 40) +
		`","type":"Subscription","topic":"https://example.com/books/{id}","subscriber":"urn:uuid:` + strings.Repeat("u", 36) +
		`","active":true,"payload":{"user":"https://example.com/users/1"}}`)
	for n := range nodes {
		node := "node-" + strconv.Itoa(n)
		if _, err := e.Renew(b.Context(), node, nil, time.Minute); err != nil {
			b.Fatal(err)
		}
		for from := n; from < subs; from += nodes * 1000 {
			_, err := e.rdb.Pipelined(b.Context(), func(p goredis.Pipeliner) error {
				for i := from; i < min(subs, from+nodes*1000); i += nodes {
					p.HSet(b.Context(), e.keys.presence+node, "/.well-known/mercure/subscriptions/"+strconv.Itoa(i), doc)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	cpu0 := redisCPU(b, srv)
	b.ResetTimer()
	for b.Loop() {
		m, err := e.PresenceList(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if len(m) != subs {
			b.Fatalf("listed %d, want %d", len(m), subs)
		}
	}
	b.StopTimer()
	b.ReportMetric((redisCPU(b, srv)-cpu0)/float64(b.N)*1e3, "redis-ms/list")
}
