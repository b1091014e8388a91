package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/herald-hub/herald/client"
)

// FleetSpec describes a fleet of subscriber streams. It travels to worker
// processes as JSON.
type FleetSpec struct {
	// Subscribers is the fleet's size in all processes. A process opens
	// subscribers First … First+Count-1 (Count 0 means all).
	Subscribers int `json:"subscribers"`
	First       int `json:"first,omitempty"`
	Count       int `json:"count,omitempty"`
	// Topics: subscriber i subscribes to Topics[i % len(Topics)].
	Topics []string `json:"topics"`
	// LastEventID is the resume point every subscriber asks for.
	LastEventID string `json:"last_event_id,omitempty"`
	// URLPatterns are added to every subscription.
	URLPatterns []string `json:"url_patterns,omitempty"`
	// Buffer is each subscription's event channel capacity (client default
	// when 0).
	Buffer int `json:"buffer,omitempty"`
	// SlowFraction of the subscribers read slowly: they pause SlowDelay
	// after every event, or never read when SlowDelay is 0. Their
	// latencies stay out of the histogram and their losses are counted
	// apart (SlowLost), so the prompt subscribers' figures stand alone.
	SlowFraction float64       `json:"slow_fraction,omitempty"`
	SlowDelay    time.Duration `json:"slow_delay,omitempty"`
}

func (s FleetSpec) slow(i int) bool {
	return s.SlowFraction > 0 && float64(i%1000) < s.SlowFraction*1000
}

// FleetStats are a fleet's running counts, safe to read at any time.
type FleetStats struct {
	Open          int64 `json:"open"`   // subscriptions alive
	Opened        int64 `json:"opened"` // ever opened
	ConnectErrors int64 `json:"connect_errors"`
	// Ended counts subscriptions that ended on their own (a permanent
	// error) before the fleet was finished.
	Ended        int64 `json:"ended"`
	Delivered    int64 `json:"delivered"`
	Unique       int64 `json:"unique"` // deliveries of a number not seen before
	Reconnects   int64 `json:"reconnects"`
	PossibleLoss int64 `json:"possible_loss"`
	// P99Us is the P99 latency of the last second's deliveries.
	P99Us int64 `json:"p99_us"`
	// OpenByTopic is how many subscribers opened on each topic; set once
	// opening is over.
	OpenByTopic []int64 `json:"open_by_topic,omitempty"`
}

func (s *FleetStats) add(o FleetStats) {
	s.Open += o.Open
	s.Opened += o.Opened
	s.ConnectErrors += o.ConnectErrors
	s.Ended += o.Ended
	s.Delivered += o.Delivered
	s.Unique += o.Unique
	s.Reconnects += o.Reconnects
	s.PossibleLoss += o.PossibleLoss
	s.P99Us = max(s.P99Us, o.P99Us) // the worst worker's: close enough for a progress line
	for k, n := range o.OpenByTopic {
		for len(s.OpenByTopic) <= k {
			s.OpenByTopic = append(s.OpenByTopic, 0)
		}
		s.OpenByTopic[k] += n
	}
}

// FleetResult is what a finished fleet counted.
type FleetResult struct {
	Stats FleetStats `json:"stats"`
	// Expected is the number of deliveries the publish log calls for
	// (acknowledged publishes times their topic's prompt subscribers).
	Expected   int64 `json:"expected"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	OutOfOrder int64 `json:"out_of_order"`
	Unparsed   int64 `json:"unparsed"`
	// SlowDelivered and SlowLost are the slow subscribers' share.
	SlowDelivered int64 `json:"slow_delivered,omitempty"`
	SlowLost      int64 `json:"slow_lost,omitempty"`
	// FirstDelivery and LastDelivery are unix nanoseconds (0: none).
	FirstDelivery int64 `json:"first_delivery"`
	LastDelivery  int64 `json:"last_delivery"`
	// Hist is the latency histogram (µs) in HdrHistogram's V2 compressed
	// encoding, for the trip from a worker.
	Hist string `json:"hist,omitempty"`
	// Errors are the first few reasons subscriptions failed or ended.
	Errors []string `json:"errors,omitempty"`

	hist *hdr.Histogram
}

// Histogram is the publish→deliver latency histogram in microseconds.
func (r *FleetResult) Histogram() *hdr.Histogram { return r.hist }

func (r *FleetResult) merge(o *FleetResult) {
	r.Stats.add(o.Stats)
	r.Expected += o.Expected
	r.Lost += o.Lost
	r.Duplicates += o.Duplicates
	r.OutOfOrder += o.OutOfOrder
	r.Unparsed += o.Unparsed
	r.SlowDelivered += o.SlowDelivered
	r.SlowLost += o.SlowLost
	if o.FirstDelivery != 0 && (r.FirstDelivery == 0 || o.FirstDelivery < r.FirstDelivery) {
		r.FirstDelivery = o.FirstDelivery
	}
	r.LastDelivery = max(r.LastDelivery, o.LastDelivery)
	if r.hist == nil {
		r.hist = newHist()
	}
	if o.hist != nil {
		r.hist.Merge(o.hist)
	}
	r.Errors = appendErrs(r.Errors, o.Errors...)
}

const maxErrs = 5

func appendErrs(errs []string, more ...string) []string {
	for _, e := range more {
		if len(errs) < maxErrs {
			errs = append(errs, e)
		}
	}
	return errs
}

// Fleet is a set of subscriber streams, in this process or spread over
// worker processes.
type Fleet interface {
	// Open opens the subscribers and returns once each has connected or
	// failed, or Cfg.ConnectTimeout has passed. It fails only when none
	// could connect; the streams live until Finish, Close or ctx's end.
	Open(ctx context.Context) error
	// Stats returns the running counts.
	Stats() FleetStats
	// Start tells the fleet that the measured phase begins (workers are
	// told so; subscribers measure whatever arrives either way).
	Start()
	// Finish ends every stream and counts, against log, what each
	// subscriber lost, got twice or out of order. ctx bounds the wait for
	// workers; the fleet is closed afterwards either way.
	Finish(ctx context.Context, log PublishLog) (*FleetResult, error)
	// Close abandons the fleet, closing every connection and process it
	// opened. It is safe after Finish and more than once.
	Close()
}

// NewFleet returns a fleet of spec's subscribers, not yet open. When one
// process may not hold them (the open-files limit), or Cfg.Workers asks
// for it, they are spread over worker processes.
func (e *Env) NewFleet(spec FleetSpec) Fleet {
	if spec.Count == 0 {
		spec.Count = spec.Subscribers - spec.First
	}
	if !e.local {
		if w := e.workersFor(spec.Count); w > 0 {
			e.workersUsed = w
			return &remoteFleet{e: e, spec: spec, n: w}
		}
	}
	return newLocalFleet(e, spec)
}

// fdReserve is what a process keeps for everything but subscriber
// sockets: publishers, stdio, epoll, pipes to workers.
const fdReserve = 512

// isolateFrom is the fleet size from which subscribers leave this process
// for a worker by default: thousands of subscriber goroutines waking at
// every update delay the publishers' goroutines by tens of milliseconds,
// which then shows up as publish latency (measured here: 2,500
// subscribers at 80 updates/s, publish p50 41 ms in one process, 15 ms
// with the subscribers in a worker).
const isolateFrom = 1000

// workersFor is the number of worker processes n subscribers need: the
// forced Cfg.Workers (negative: none), else enough that none holds more
// sockets than its open-files limit allows (HTTP/2 multiplexes), and at
// least one from isolateFrom subscribers.
func (e *Env) workersFor(n int) int {
	w := e.Cfg.Workers
	switch {
	case w > 0:
		return min(w, max(n, 1))
	case w < 0:
		return 0
	}
	if !e.Cfg.HTTP2 && e.FDLimit > 0 {
		capacity := int(e.FDLimit) - fdReserve - 2*e.Cfg.Publishers
		if capacity > 0 && n > capacity {
			return (n + capacity - 1) / capacity
		}
	}
	if n >= isolateFrom {
		return 1
	}
	return 0
}

// localFleet holds its streams in this process.
type localFleet struct {
	e    *Env
	spec FleetSpec
	rec  *recorder

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // consumers and the rotator

	mu   sync.Mutex
	subs []*fleetSub
	errs []string

	opened, open, connectErrors, ended      atomic.Int64
	delivered, unique, reconnects, possible atomic.Int64
	p99                                     atomic.Int64
	openByTopic                             []int64 // after opening

	closeOnce sync.Once
}

// fleetSub is one subscriber; only its consumer goroutine touches it until
// the fleet has waited for that goroutine.
type fleetSub struct {
	idx, topic int
	slow       bool
	sub        *client.Subscription

	trackers                       map[Stream]*tracker
	delivered, dups, ooo, unparsed int64
	firstDelivery, lastDelivery    int64
}

func newLocalFleet(e *Env, spec FleetSpec) *localFleet {
	return &localFleet{e: e, spec: spec, rec: newRecorder()}
}

func (f *localFleet) Open(ctx context.Context) error {
	if len(f.spec.Topics) == 0 {
		return errors.New("fleet: no topics")
	}
	f.mu.Lock()
	f.ctx, f.cancel = context.WithCancel(ctx)
	f.mu.Unlock()
	f.wg.Go(f.rotate)
	err := f.openAll(ctx)
	if err != nil {
		f.Close()
	}
	return err
}

// openAll opens the subscribers one by one, ConnectConcurrency at a time.
func (f *localFleet) openAll(ctx context.Context) error {
	e, spec := f.e, f.spec
	deadline := time.Now().Add(e.Cfg.ConnectTimeout)
	sem := make(chan struct{}, e.Cfg.ConnectConcurrency)
	var opening sync.WaitGroup
	for i := spec.First; i < spec.First+spec.Count; i++ {
		if f.ctx.Err() != nil || time.Now().After(deadline) {
			f.connectErrors.Add(int64(spec.First + spec.Count - i))
			if f.ctx.Err() == nil {
				f.noteErr(fmt.Errorf("connect timeout (%s) after %d subscribers", e.Cfg.ConnectTimeout, i-spec.First))
			}
			break
		}
		select {
		case sem <- struct{}{}:
		case <-f.ctx.Done():
			continue
		}
		opening.Go(func() {
			defer func() { <-sem }()
			f.openOne(i, deadline)
		})
	}
	opening.Wait()

	f.mu.Lock()
	f.openByTopic = make([]int64, len(spec.Topics))
	for _, s := range f.subs {
		f.openByTopic[s.topic]++
	}
	f.mu.Unlock()
	if f.opened.Load() == 0 && spec.Count > 0 {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		why := "no error recorded"
		if len(f.errs) > 0 {
			why = f.errs[0]
		}
		return fmt.Errorf("no subscriber could connect: %s", why)
	}
	return nil
}

func (f *localFleet) noteErr(err error) {
	f.mu.Lock()
	f.errs = appendErrs(f.errs, err.Error())
	f.mu.Unlock()
}

// openOne opens subscriber i. The subscription lives in its own context so
// that a connection attempt still unanswered at the deadline can be
// abandoned without ending the others.
func (f *localFleet) openOne(i int, deadline time.Time) {
	s := &fleetSub{idx: i, topic: i % len(f.spec.Topics), slow: f.spec.slow(i), trackers: make(map[Stream]*tracker, 1)}
	ctx, cancel := context.WithCancel(f.ctx)
	watchdog := time.AfterFunc(time.Until(deadline), cancel)
	sub, err := f.e.nodeFor(i).subs.Subscribe(ctx, client.SubscribeOptions{
		Topics:      []string{f.spec.Topics[s.topic]},
		URLPatterns: f.spec.URLPatterns,
		LastEventID: f.spec.LastEventID,
		Buffer:      f.spec.Buffer,
		OnConnect: func(ci client.ConnectInfo) {
			if ci.Attempt > 1 {
				f.reconnects.Add(1)
			}
			if ci.PossibleLoss {
				f.possible.Add(1)
			}
		},
	})
	if !watchdog.Stop() && err == nil {
		err = errors.New("connect timeout")
		sub.Close()
	}
	if err != nil {
		cancel()
		f.connectErrors.Add(1)
		if f.ctx.Err() == nil {
			f.noteErr(err)
		}
		return
	}
	s.sub = sub
	f.opened.Add(1)
	f.open.Add(1)
	f.mu.Lock()
	f.subs = append(f.subs, s)
	f.mu.Unlock()
	f.wg.Go(func() {
		defer cancel()
		f.consume(s)
	})
}

// consume reads one subscriber's events until its subscription ends.
func (f *localFleet) consume(s *fleetSub) {
	defer f.open.Add(-1)
	if s.slow && f.spec.SlowDelay <= 0 {
		<-f.ctx.Done() // a reader that never reads
		return
	}
	var pause *time.Timer
	for ev := range s.sub.Events() {
		now := time.Now()
		st, seq, sent, ok := parsePayload(ev.Data)
		if !ok {
			s.unparsed++
			continue
		}
		tr := s.trackers[st]
		if tr == nil {
			tr = &tracker{}
			s.trackers[st] = tr
		}
		v := tr.see(seq)
		if v == implausible {
			s.unparsed++
			continue
		}
		ns := now.UnixNano()
		if s.firstDelivery == 0 {
			s.firstDelivery = ns
		}
		s.lastDelivery = ns
		s.delivered++
		f.delivered.Add(1)
		switch v {
		case duplicate:
			s.dups++
		case outOfOrder:
			s.ooo++
			f.unique.Add(1)
		default:
			f.unique.Add(1)
		}
		if s.slow {
			if pause == nil {
				pause = time.NewTimer(f.spec.SlowDelay)
			} else {
				pause.Reset(f.spec.SlowDelay)
			}
			select {
			case <-pause.C:
			case <-f.ctx.Done():
			}
			continue
		}
		f.rec.record(s.idx, time.Duration(ns-sent))
	}
	if f.ctx.Err() == nil {
		f.ended.Add(1)
		if err := s.sub.Err(); err != nil {
			f.noteErr(fmt.Errorf("subscription %d ended: %w", s.idx, err))
		}
	}
}

// rotate keeps the last second's P99 for Stats.
func (f *localFleet) rotate() {
	scratch := newHist()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
			f.p99.Store(f.rec.rotate(scratch))
		}
	}
}

func (f *localFleet) Stats() FleetStats {
	st := FleetStats{
		Open:          f.open.Load(),
		Opened:        f.opened.Load(),
		ConnectErrors: f.connectErrors.Load(),
		Ended:         f.ended.Load(),
		Delivered:     f.delivered.Load(),
		Unique:        f.unique.Load(),
		Reconnects:    f.reconnects.Load(),
		PossibleLoss:  f.possible.Load(),
		P99Us:         f.p99.Load(),
	}
	f.mu.Lock()
	st.OpenByTopic = f.openByTopic
	f.mu.Unlock()
	return st
}

func (f *localFleet) Start() {}

func (f *localFleet) Close() {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		cancel := f.cancel
		f.mu.Unlock()
		if cancel == nil {
			return // never opened
		}
		cancel()
		f.wg.Wait()
		f.mu.Lock()
		subs := f.subs
		f.mu.Unlock()
		for _, s := range subs {
			s.sub.Close()
		}
	})
}

func (f *localFleet) Finish(_ context.Context, log PublishLog) (*FleetResult, error) {
	stats := f.Stats() // before Close: Open still counts the live streams
	f.Close()
	r := &FleetResult{Stats: stats, hist: f.rec.merged()}
	r.Stats.Open = f.open.Load()
	byTopic := log.byTopic()
	failed := make(map[Stream]map[uint64]bool)
	for _, sl := range log.Streams {
		if len(sl.Failed) > 0 {
			m := make(map[uint64]bool, len(sl.Failed))
			for _, s := range sl.Failed {
				m[s] = true
			}
			failed[sl.Stream] = m
		}
	}
	for _, s := range f.subs {
		r.Duplicates += s.dups
		r.OutOfOrder += s.ooo
		r.Unparsed += s.unparsed
		if s.firstDelivery != 0 && (r.FirstDelivery == 0 || s.firstDelivery < r.FirstDelivery) {
			r.FirstDelivery = s.firstDelivery
		}
		r.LastDelivery = max(r.LastDelivery, s.lastDelivery)
		for _, sl := range byTopic[s.topic] {
			tr := s.trackers[sl.Stream]
			if tr == nil {
				tr = &tracker{}
			}
			lost := tr.lost(sl.Last, failed[sl.Stream])
			if s.slow {
				r.SlowLost += lost
				continue
			}
			r.Lost += lost
			r.Expected += int64(sl.Last) - int64(len(sl.Failed))
		}
		if s.slow {
			r.SlowDelivered += s.delivered
		}
	}
	f.mu.Lock()
	r.Errors = appendErrs(nil, f.errs...)
	f.mu.Unlock()
	var err error
	if r.Hist, err = encodeHist(r.hist); err != nil {
		return nil, fmt.Errorf("encode histogram: %w", err)
	}
	return r, nil
}
