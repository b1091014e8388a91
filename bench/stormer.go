package bench

// The storm's connection attempts. A stormer makes one process's share
// of them, in a storm worker (the hidden worker mode, given "storm"
// orders) or in this process; a stormRun is the scenario's handle on all
// of them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/herald-hub/herald/sse"
)

const (
	// stormAttemptTimeout bounds one attempt from its dial to the
	// response head. A SYN that meets a full accept queue is dropped and
	// sent again after 1 s, then 3 s more: 5 s sees two retries, and an
	// attempt still unanswered then counts as refused (timeout).
	stormAttemptTimeout = 5 * time.Second
	// stormShedWait is how long an event stream must stay open after its
	// head to count as admitted. herald's shed answer (a retry field and
	// the end of the body) leaves in the same write as its head, so the
	// wait only has to outlast scheduling delays under load.
	stormShedWait = 500 * time.Millisecond
	// stormBodyKeep is how much of a stream's body is kept to look for a
	// retry field when it ends: a shed body is a comment and one field.
	stormBodyKeep = 1 << 10
	// stormSettleMore is how long finishing waits, beyond the window and
	// the longest attempt, for every attempt to have its outcome.
	stormSettleMore = 2 * time.Second
)

// The outcomes that have a time-to-outcome histogram.
const (
	outAdmitted = "admitted" // time to the response head
	outShed     = "shed"     // time to the end of the shed answer
	outRefused  = "refused"  // time to the reset, EOF, dial error or timeout
	outStatus   = "status"   // time to the response head
)

var stormOutcomes = []string{outAdmitted, outShed, outRefused, outStatus}

// StormSpec is one process's share of a storm; it travels to storm
// workers as JSON.
type StormSpec struct {
	// Conns is the storm's attempts in all processes. This process makes
	// attempts Worker, Worker+Workers, Worker+2×Workers, … below Conns,
	// attempt i at i×Window/Conns after the storm starts, so that the
	// processes together spread them evenly over Window.
	Conns   int           `json:"conns"`
	Worker  int           `json:"worker"`
	Workers int           `json:"workers"`
	Window  time.Duration `json:"window"`
	// Topic is what every attempt subscribes to: a topic nobody publishes on.
	Topic string `json:"topic"`
	// Slots bounds the attempts and admitted streams open at once in this
	// process, each one descriptor; 0 takes the open-files limit less
	// fdReserve.
	Slots int `json:"slots,omitempty"`
}

// share is the number of attempts this process makes.
func (s StormSpec) share() int {
	return sharedFrom(s.Worker, s.Conns, s.Workers)
}

// sharedFrom counts the attempts i, i+step, … below n.
func sharedFrom(i, n, step int) int {
	if i >= n || step <= 0 {
		return 0
	}
	return (n - i + step - 1) / step
}

// StormCounts are a storm's running counts.
type StormCounts struct {
	Started  int64 `json:"started"`
	Answered int64 `json:"answered"` // attempts whose dial failed or that got a response head
	Open     int64 `json:"open"`     // admitted streams held now
	Admitted int64 `json:"admitted"`
	Shed     int64 `json:"shed"`
	Refused  int64 `json:"refused"`
}

func (c *StormCounts) add(o StormCounts) {
	c.Started += o.Started
	c.Answered += o.Answered
	c.Open += o.Open
	c.Admitted += o.Admitted
	c.Shed += o.Shed
	c.Refused += o.Refused
}

// StormResult is what a storm, or one process's share of it, counted.
// Every attempt planned ends in exactly one of NotStarted, Aborted,
// Admitted, Shed, Refused, Status, EndedAtOnce and LocalErrors.
type StormResult struct {
	Attempts int64 `json:"attempts"` // planned
	Started  int64 `json:"started"`
	// NotStarted were not started: no descriptor was free before the
	// window ended.
	NotStarted int64 `json:"not_started"`
	// Aborted were cut short by the run's end (Ctrl-C, its time limit).
	Aborted int64 `json:"aborted,omitempty"`
	// Admitted got an event stream that stayed open; Shed one that ended
	// at once with a retry field (herald's way of sending a subscriber
	// away); Refused no response: a reset, the connection closed before
	// a response, a dial error or no answer within stormAttemptTimeout,
	// counted by kind in RefusedBy.
	Admitted  int64            `json:"admitted"`
	Shed      int64            `json:"shed"`
	Refused   int64            `json:"refused"`
	RefusedBy map[string]int64 `json:"refused_by,omitempty"`
	// Status counts the other answers by HTTP status ("200" for one that
	// is not an event stream).
	Status map[string]int64 `json:"status,omitempty"`
	// EndedAtOnce are event streams that ended at once without a retry
	// field, or failed, within stormShedWait of their head.
	EndedAtOnce int64 `json:"ended_at_once"`
	// LocalErrors failed on this side: no source port or descriptor left.
	LocalErrors int64 `json:"local_errors"`
	// PendingAtWindowEnd had been started and had neither a response head
	// nor an error when the window ended.
	PendingAtWindowEnd int64 `json:"pending_at_window_end"`
	// Dropped are admitted streams the hub ended before the storm did.
	Dropped int64 `json:"dropped"`
	// LastStartS is when the last attempt started, after the storm began.
	LastStartS float64  `json:"last_start_s"`
	Errors     []string `json:"errors,omitempty"`
	// Hists are the time-to-outcome histograms (µs) by outcome, in
	// HdrHistogram's V2 compressed encoding, for the trip from a worker.
	Hists map[string]string `json:"hists,omitempty"`

	hists map[string]*hdr.Histogram
}

func (r *StormResult) merge(o *StormResult) {
	r.Attempts += o.Attempts
	r.Started += o.Started
	r.NotStarted += o.NotStarted
	r.Aborted += o.Aborted
	r.Admitted += o.Admitted
	r.Shed += o.Shed
	r.Refused += o.Refused
	r.RefusedBy = addCounts(r.RefusedBy, o.RefusedBy)
	r.Status = addCounts(r.Status, o.Status)
	r.EndedAtOnce += o.EndedAtOnce
	r.LocalErrors += o.LocalErrors
	r.PendingAtWindowEnd += o.PendingAtWindowEnd
	r.Dropped += o.Dropped
	r.LastStartS = max(r.LastStartS, o.LastStartS)
	r.Errors = appendErrs(r.Errors, o.Errors...)
	for k, h := range o.hists {
		if r.hists == nil {
			r.hists = make(map[string]*hdr.Histogram)
		}
		if r.hists[k] == nil {
			r.hists[k] = newHist()
		}
		r.hists[k].Merge(h)
	}
}

func addCounts(m, o map[string]int64) map[string]int64 {
	for k, n := range o {
		if m == nil {
			m = make(map[string]int64)
		}
		m[k] += n
	}
	return m
}

// encode fills Hists from the histograms, for the trip to the parent.
func (r *StormResult) encode() error {
	for k, h := range r.hists {
		s, err := encodeHist(h)
		if err != nil {
			return fmt.Errorf("encode %s histogram: %w", k, err)
		}
		if r.Hists == nil {
			r.Hists = make(map[string]string)
		}
		r.Hists[k] = s
	}
	return nil
}

// decode fills the histograms from Hists, after the trip.
func (r *StormResult) decode() error {
	for k, s := range r.Hists {
		h, err := decodeHist(s)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if r.hists == nil {
			r.hists = make(map[string]*hdr.Histogram)
		}
		r.hists[k] = h
	}
	r.Hists = nil
	return nil
}

// timing is the time-to-outcome summary of one outcome (nil: none).
func (r *StormResult) timing(outcome string) *latencyFigure {
	h := r.hists[outcome]
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	l := latencyFigure(percentiles(h))
	return &l
}

// stormer makes one process's share of a storm.
type stormer struct {
	e     *Env
	spec  StormSpec
	slots chan struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	stopWatch func() bool // the context.AfterFunc that stops at ctx's end

	startOnce sync.Once
	begun     time.Time     // set by start, before the launcher and the window watch
	begunNs   atomic.Int64  // begun for the others (0: not begun)
	launched  chan struct{} // closed when the launcher is done
	wg        sync.WaitGroup

	// stopCh closes when the storm is over: held streams are closed then,
	// and one that ends afterwards was not dropped by the hub.
	stopCh   chan struct{}
	stopOnce sync.Once

	started, answered, settled, open                atomic.Int64
	admitted, shed, refused, endedAtOnce, localErrs atomic.Int64
	notStarted, aborted, pending, dropped           atomic.Int64
	lastStart                                       atomic.Int64 // ns after begun

	mu        sync.Mutex
	held      map[*rawConn]struct{}
	refusedBy map[string]int64
	status    map[string]int64
	errs      []string
	rec       map[string]*recorder
}

// newStormer prepares spec's share; start starts it. It ends with ctx.
func newStormer(ctx context.Context, e *Env, spec StormSpec) *stormer {
	slots := spec.Slots
	if slots <= 0 {
		slots = stormSlots(e.FDLimit)
	}
	s := &stormer{
		e: e, spec: spec, slots: make(chan struct{}, slots),
		launched: make(chan struct{}), stopCh: make(chan struct{}),
		held: make(map[*rawConn]struct{}), refusedBy: make(map[string]int64), status: make(map[string]int64),
		rec: make(map[string]*recorder, len(stormOutcomes)),
	}
	for _, k := range stormOutcomes {
		s.rec[k] = newRecorder()
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.stopWatch = context.AfterFunc(s.ctx, s.stop)
	return s
}

// stormSlots is how many connections a storm process may hold: its
// open-files limit less what it keeps for the rest (10,000 when the
// limit is unknown).
func stormSlots(fdLimit uint64) int {
	if fdLimit == 0 {
		return 10_000
	}
	return max(int(fdLimit)-fdReserve, 16)
}

// start starts the storm now; only the first call counts.
func (s *stormer) start() {
	s.startOnce.Do(func() {
		s.begun = time.Now()
		s.begunNs.Store(s.begun.UnixNano())
		s.wg.Go(s.launch)
		s.wg.Go(s.watchWindow)
	})
}

// launch starts every attempt of the share at its time (late, as fast as
// it can, when it falls behind: LastStartS tells), as long as a slot is
// free before the window ends.
func (s *stormer) launch() {
	defer close(s.launched)
	sp := s.spec
	windowEnd := time.NewTimer(sp.Window)
	defer windowEnd.Stop()
	for i := sp.Worker; i < sp.Conns; i += sp.Workers {
		left := int64(sharedFrom(i, sp.Conns, sp.Workers))
		at := s.begun.Add(time.Duration(int64(sp.Window) * int64(i) / int64(sp.Conns)))
		if !sleepUntil(s.ctx, at) {
			s.aborted.Add(left)
			return
		}
		select {
		case s.slots <- struct{}{}:
		default:
			// Every slot is taken: wait for one until the window ends.
			select {
			case s.slots <- struct{}{}:
			case <-windowEnd.C:
				s.notStarted.Add(left)
				return
			case <-s.ctx.Done():
				s.aborted.Add(left)
				return
			}
		}
		s.started.Add(1)
		s.lastStart.Store(int64(time.Since(s.begun)))
		s.wg.Go(func() {
			defer func() { <-s.slots }()
			s.attempt(i)
		})
	}
}

// watchWindow counts the attempts still waiting for the hub when the
// window ends.
func (s *stormer) watchWindow() {
	if sleepUntil(s.ctx, s.begun.Add(s.spec.Window)) {
		s.pending.Store(s.started.Load() - s.answered.Load())
	}
}

// attempt is connection attempt i: a subscription request, classified by
// how the hub answered it.
func (s *stormer) attempt(i int) {
	t0 := time.Now()
	actx, cancel := context.WithTimeout(s.ctx, stormAttemptTimeout)
	rc, err := s.e.rawSubscribe(actx, s.spec.Topic, nil)
	cancel()
	head := time.Since(t0)
	s.answered.Add(1)
	if err != nil {
		s.failed(i, err, head)
		s.settled.Add(1)
		return
	}
	s.watch(i, rc, t0, head)
}

// failed classifies an attempt that got no event stream.
func (s *stormer) failed(i int, err error, took time.Duration) {
	if s.ctx.Err() != nil {
		s.aborted.Add(1)
		return
	}
	if se, ok := errors.AsType[*statusError](err); ok {
		s.count(s.status, strconv.Itoa(se.code))
		s.rec[outStatus].record(i, took)
		return
	}
	if errors.Is(err, errNotEventStream) {
		s.count(s.status, "200")
		s.rec[outStatus].record(i, took)
		return
	}
	kind := refusal(err)
	if kind == "" {
		s.localErrs.Add(1)
		s.note(err)
		return
	}
	s.refused.Add(1)
	s.count(s.refusedBy, kind)
	s.rec[outRefused].record(i, took)
	if kind == "other" {
		s.note(err)
	}
}

// refusal names how the hub, or the kernel for it, refused a connection
// attempt: "" for an error of this side's own making (no source port or
// descriptor left).
func refusal(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE),
		errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE), errors.Is(err, syscall.ENOBUFS):
		return ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return "timeout"
	}
	return "other"
}

// watch tells an admitted stream from a shed one: a stream still open
// stormShedWait after its head is admitted and held until the storm
// ends; one whose body ends before is shed when it carried a retry field.
func (s *stormer) watch(i int, rc *rawConn, t0 time.Time, head time.Duration) {
	const deciding, admitted, ended = 0, 1, 2
	var state atomic.Int32
	decided := make(chan struct{}) // closed when the admitting timer has run
	admit := time.AfterFunc(stormShedWait, func() {
		defer close(decided)
		if !state.CompareAndSwap(deciding, admitted) {
			return
		}
		s.admitted.Add(1)
		s.open.Add(1)
		s.rec[outAdmitted].record(i, head)
		s.settled.Add(1)
		s.hold(rc)
	})
	body, err := readBody(rc.body())
	if state.CompareAndSwap(deciding, ended) {
		if !admit.Stop() {
			<-decided
		}
		rc.close()
		defer s.settled.Add(1)
		switch {
		case s.ctx.Err() != nil:
			s.aborted.Add(1)
		case errors.Is(err, io.EOF) && hasRetry(body):
			s.shed.Add(1)
			s.rec[outShed].record(i, time.Since(t0))
		default:
			s.endedAtOnce.Add(1)
			if !errors.Is(err, io.EOF) {
				s.note(fmt.Errorf("stream failed at once: %w", err))
			}
		}
		return
	}
	<-decided
	s.open.Add(-1)
	if !closed(s.stopCh) {
		s.dropped.Add(1)
		s.note(fmt.Errorf("admitted stream ended: %w", err))
	}
	s.release(rc)
}

// readBody reads r to its end and returns its first stormBodyKeep bytes
// with io.EOF, or the error that ended it.
func readBody(r io.Reader) ([]byte, error) {
	var keep []byte
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		if room := stormBodyKeep - len(keep); room > 0 {
			keep = append(keep, buf[:min(n, room)]...)
		}
		if err != nil {
			return keep, err
		}
	}
}

// hasRetry reports whether an event stream's body set a retry field.
func hasRetry(body []byte) bool {
	r := sse.NewReader(bytes.NewReader(body))
	for {
		if _, err := r.Next(); err != nil {
			return r.Retry() != ""
		}
	}
}

// hold keeps an admitted stream until the storm ends.
func (s *stormer) hold(rc *rawConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if closed(s.stopCh) {
		rc.close()
		return
	}
	s.held[rc] = struct{}{}
}

func (s *stormer) release(rc *rawConn) {
	s.mu.Lock()
	delete(s.held, rc)
	s.mu.Unlock()
	rc.close()
}

// stop ends the storm: the held streams are closed.
func (s *stormer) stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		close(s.stopCh)
		for rc := range s.held {
			rc.close()
		}
	})
}

func (s *stormer) count(m map[string]int64, k string) {
	s.mu.Lock()
	m[k]++
	s.mu.Unlock()
}

func (s *stormer) note(err error) {
	s.mu.Lock()
	s.errs = appendErrs(s.errs, err.Error())
	s.mu.Unlock()
}

func (s *stormer) counts() StormCounts {
	return StormCounts{
		Started: s.started.Load(), Answered: s.answered.Load(), Open: s.open.Load(),
		Admitted: s.admitted.Load(), Shed: s.shed.Load(), Refused: s.refused.Load(),
	}
}

// finish waits until every attempt started has its outcome (or the
// window, the longest attempt and stormSettleMore have passed), ends the
// storm, closing the streams it holds, and counts.
func (s *stormer) finish() *StormResult {
	began := s.begunNs.Load() != 0
	if began {
		<-s.launched
		deadline := time.Unix(0, s.begunNs.Load()).Add(s.spec.Window + stormAttemptTimeout + stormShedWait + stormSettleMore)
		for s.settled.Load() < s.started.Load() && time.Now().Before(deadline) {
			if !sleepFor(s.ctx, 20*time.Millisecond) {
				break
			}
		}
	}
	s.close()
	r := &StormResult{
		Attempts:           int64(s.spec.share()),
		Started:            s.started.Load(),
		NotStarted:         s.notStarted.Load(),
		Aborted:            s.aborted.Load(),
		Admitted:           s.admitted.Load(),
		Shed:               s.shed.Load(),
		Refused:            s.refused.Load(),
		EndedAtOnce:        s.endedAtOnce.Load(),
		LocalErrors:        s.localErrs.Load(),
		PendingAtWindowEnd: s.pending.Load(),
		Dropped:            s.dropped.Load(),
		LastStartS:         time.Duration(s.lastStart.Load()).Seconds(),
		hists:              make(map[string]*hdr.Histogram),
	}
	if !began {
		r.NotStarted = r.Attempts
	}
	s.mu.Lock()
	r.RefusedBy = maps.Clone(s.refusedBy)
	r.Status = maps.Clone(s.status)
	r.Errors = slices.Clone(s.errs)
	s.mu.Unlock()
	for k, rec := range s.rec {
		r.hists[k] = rec.merged()
	}
	return r
}

// close ends everything: attempts under way, held streams, goroutines.
func (s *stormer) close() {
	s.stop()
	s.cancel()
	s.wg.Wait()
	s.stopWatch()
}

// stormWorker is the worker mode given "storm" orders (see Worker): it
// makes spec's share of the storm.
func stormWorker(ctx context.Context, cfg Config, spec StormSpec, send func(workerMsg) error, next func() (workerMsg, error)) error {
	cfg.fill()
	env, err := newEnv(cfg, true)
	if err != nil {
		_ = send(workerMsg{Type: "error", Error: err.Error()})
		return err
	}
	defer env.close()
	env.dialer.offset(spec.Worker)
	s := newStormer(ctx, env, spec)
	defer s.close()
	stopStats := sendStats(send, func() workerMsg {
		c := s.counts()
		return workerMsg{Type: "stats", StormStats: &c}
	})
	defer stopStats()
	if err := send(workerMsg{Type: "ready"}); err != nil {
		return err
	}
	for {
		m, err := next()
		if err != nil {
			return err
		}
		switch m.Type {
		case "start":
			s.start()
		case "finish":
			res := s.finish()
			if err := res.encode(); err != nil {
				_ = send(workerMsg{Type: "error", Error: err.Error()})
				return err
			}
			return send(workerMsg{Type: "result", StormResult: res})
		default:
			return fmt.Errorf("worker: unexpected %q", m.Type)
		}
	}
}

// stormRun is a storm, made in storm worker processes or in this one.
type stormRun struct {
	spec    StormSpec
	workers int      // processes; 0: this one
	local   *stormer // when workers is 0

	mu    sync.Mutex
	procs []*workerProc

	arm       sync.WaitGroup // the goroutine that starts the storm
	disarm    chan struct{}
	disarmed  sync.Once
	closeOnce sync.Once
}

// stormWorkersFor is the number of storm processes n attempts need: the
// forced Cfg.StormWorkers (negative: none), else enough that none holds
// more connections than its open-files limit allows, and at least one, so
// that the storm's work does not delay the publishers.
func (e *Env) stormWorkersFor(n int) int {
	switch w := e.Cfg.StormWorkers; {
	case w > 0:
		return min(w, max(n, 1))
	case w < 0:
		return 0
	}
	slots := stormSlots(e.FDLimit)
	return max(1, (n+slots-1)/slots)
}

// startStorm prepares Cfg.StormConns attempts on topic over
// Cfg.StormWindow and, when they go to workers, starts them and waits
// until they are ready; startAt starts the storm.
func startStorm(ctx context.Context, e *Env, topic string) (*stormRun, error) {
	cfg := e.Cfg
	spec := StormSpec{Conns: cfg.StormConns, Window: cfg.StormWindow, Topic: topic, Workers: 1}
	w := e.stormWorkersFor(spec.Conns)
	r := &stormRun{spec: spec, workers: w, disarm: make(chan struct{})}
	if w == 0 {
		// This process holds the prompt subscribers and the publishers'
		// connections too.
		spec.Slots = 10_000
		if e.FDLimit > 0 {
			spec.Slots = max(int(e.FDLimit)-2*fdReserve-cfg.Subscribers-2*cfg.Publishers, 16)
		}
		r.local = newStormer(ctx, e, spec)
		return r, nil
	}
	err := startWorkers(ctx, e, w, 30*time.Second, func(j int) workerMsg {
		part := spec
		part.Worker, part.Workers = j, w
		return workerMsg{Type: "storm", Storm: &part}
	}, func(p *workerProc) {
		r.mu.Lock()
		r.procs = append(r.procs, p)
		r.mu.Unlock()
	})
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *stormRun) list() []*workerProc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs
}

// startAt starts the storm at at, unless finish or close come first or
// ctx ends, and calls began then.
func (r *stormRun) startAt(ctx context.Context, at time.Time, began func()) {
	r.arm.Go(func() {
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.disarm:
			return
		case <-ctx.Done():
			return
		}
		if r.local != nil {
			r.local.start()
		}
		for _, p := range r.list() {
			_ = p.send(workerMsg{Type: "start"}) // a worker gone is found at finish
		}
		began()
	})
}

func (r *stormRun) stopArming() {
	r.disarmed.Do(func() { close(r.disarm) })
	r.arm.Wait()
}

// counts sums the running counts (the workers' as last reported).
func (r *stormRun) counts() StormCounts {
	if r.local != nil {
		return r.local.counts()
	}
	var c StormCounts
	for _, p := range r.list() {
		p.mu.Lock()
		c.add(p.stormStats)
		p.mu.Unlock()
	}
	return c
}

// finish waits for every attempt's outcome, ends the storm, closing the
// streams it holds, and counts. ctx bounds the wait for workers; the
// storm is closed afterwards either way.
func (r *stormRun) finish(ctx context.Context) (*StormResult, error) {
	defer r.close()
	r.stopArming()
	if r.local != nil {
		return r.local.finish(), nil
	}
	within := r.spec.Window + stormAttemptTimeout + stormShedWait + stormSettleMore + 60*time.Second
	results, err := finishWorkers(ctx, r.list(), workerMsg{Type: "finish"}, within,
		func(p *workerProc) chan *StormResult { return p.stormResult })
	if err != nil {
		return nil, err
	}
	total := &StormResult{}
	for _, res := range results {
		total.merge(res)
	}
	return total, nil
}

// close abandons the storm: attempts, held streams and processes end.
// It is safe after finish and more than once.
func (r *stormRun) close() {
	r.closeOnce.Do(func() {
		r.stopArming()
		if r.local != nil {
			r.local.close()
		}
		var wg sync.WaitGroup
		for _, p := range r.list() {
			wg.Go(p.close)
		}
		wg.Wait()
	})
}
