package bench

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/herald-hub/herald/client"
)

// PublishLog says what the publishers sent: for every stream, the last
// sequence number and those whose publish was not acknowledged. The
// subscribers' trackers need it to tell what is lost.
type PublishLog struct {
	Streams []StreamLog `json:"streams"`
}

// StreamLog is one stream of a PublishLog.
type StreamLog struct {
	Stream Stream   `json:"stream"`
	Last   uint64   `json:"last"`
	Failed []uint64 `json:"failed,omitempty"`
}

// byTopic indexes the log by topic.
func (l PublishLog) byTopic() map[int][]StreamLog {
	m := make(map[int][]StreamLog)
	for _, s := range l.Streams {
		m[s.Stream.Topic] = append(m[s.Stream.Topic], s)
	}
	return m
}

// pacing describes a publishing phase.
type pacing struct {
	Publishers int
	// Rate is the total rate in updates per second, spread evenly over the
	// publishers, each paced by its own ticker; 0 publishes as fast as the
	// hub answers.
	Rate     float64
	Duration time.Duration
	Topics   []string
	Payload  int
	// Count stops after this many publishes in all; 0 means no limit.
	Count int64
	// OnPublished, when set, is called after every acknowledged publish
	// with its topic index and the id the hub gave it. Publishers call it
	// concurrently.
	OnPublished func(topic int, id string)
}

// publishOutcome is what a publishing phase did.
type publishOutcome struct {
	Log       PublishLog
	Published int64 // acknowledged
	Errors    int64
	FirstErr  error
	Elapsed   time.Duration // from the first send to the last answer
	Latency   *hdr.Histogram
}

// publish runs p.Publishers publishers until p.Duration has passed, Count
// publishes were made or ctx ends, counting acknowledged publishes in live.
// Each publisher publishes one update at a time on its keep-alive
// connection; its j-th update goes to topic (publisher + j) mod topics.
// Publisher i publishes with clis[i mod len(clis)]: one client per hub.
func publish(ctx context.Context, clis []*client.Client, p pacing, live *atomic.Int64) publishOutcome {
	type pubResult struct {
		streams []StreamLog
		n, errs int64
		first   error
		hist    *hdr.Histogram
		end     time.Time
	}
	results := make([]pubResult, p.Publishers)
	var remaining atomic.Int64
	remaining.Store(p.Count)
	start := time.Now()
	deadline := start.Add(p.Duration)
	var wg sync.WaitGroup
	for i := range p.Publishers {
		wg.Go(func() {
			r := &results[i]
			r.hist = newHist()
			cli := clis[i%len(clis)]
			seqs := make([]uint64, len(p.Topics))
			failed := make([][]uint64, len(p.Topics))
			var buf []byte
			one := func(j int) {
				k := (i + j) % len(p.Topics)
				seqs[k]++
				t0 := time.Now()
				buf = appendPayload(buf[:0], Stream{Topic: k, Publisher: i}, seqs[k], t0.UnixNano(), p.Payload)
				id, err := cli.Publish(ctx, client.Update{Topics: []string{p.Topics[k]}, Data: string(buf)})
				now := time.Now()
				r.end = now
				if err != nil {
					failed[k] = append(failed[k], seqs[k])
					r.errs++
					if r.first == nil {
						r.first = err
					}
					return
				}
				_ = r.hist.RecordValue(clampUs(now.Sub(t0)))
				r.n++
				live.Add(1)
				if p.OnPublished != nil {
					p.OnPublished(k, id)
				}
			}
			take := func() bool { return p.Count == 0 || remaining.Add(-1) >= 0 }
			defer func() {
				for k, last := range seqs {
					if last > 0 {
						r.streams = append(r.streams, StreamLog{Stream: Stream{Topic: k, Publisher: i}, Last: last, Failed: failed[k]})
					}
				}
			}()
			if p.Rate <= 0 {
				for j := 0; ctx.Err() == nil && time.Now().Before(deadline) && take(); j++ {
					one(j)
				}
				return
			}
			// Paced: publisher i sends its n-th update at start + offset +
			// n/rate, offsets staggering the publishers over one interval.
			// A tick sends what is due, usually one; a publisher that fell
			// behind catches up rather than lowering the rate.
			rate := p.Rate / float64(p.Publishers)
			interval := time.Duration(float64(time.Second) / rate)
			offset := time.Duration(int64(interval) * int64(i) / int64(p.Publishers))
			tick := max(interval, time.Millisecond)
			select {
			case <-ctx.Done():
				return
			case <-time.After(offset):
			}
			t := time.NewTicker(tick)
			defer t.Stop()
			sent := 0
			for {
				now := time.Now()
				if !now.Before(deadline) {
					return
				}
				due := int(math.Floor(now.Sub(start.Add(offset)).Seconds()*rate)) + 1
				for ; sent < due && ctx.Err() == nil && time.Now().Before(deadline); sent++ {
					if !take() {
						return
					}
					one(sent)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	wg.Wait()
	out := publishOutcome{Latency: newHist()}
	end := start
	for _, r := range results {
		out.Log.Streams = append(out.Log.Streams, r.streams...)
		out.Published += r.n
		out.Errors += r.errs
		if out.FirstErr == nil {
			out.FirstErr = r.first
		}
		out.Latency.Merge(r.hist)
		if r.end.After(end) {
			end = r.end
		}
	}
	out.Elapsed = end.Sub(start)
	return out
}
