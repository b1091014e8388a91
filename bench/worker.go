package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Worker processes hold subscribers when one process may not: the parent
// starts each with Config.WorkerCommand and talks to it in JSON lines,
// over the worker's stdin and stdout:
//
//	parent → worker  {"type":"open","config":…,"spec":…}  (its share of the fleet)
//	worker → parent  {"type":"stats","stats":…}            (every 200ms, from the start)
//	worker → parent  {"type":"ready","stats":…}            (all opened) or {"type":"error"}
//	parent → worker  {"type":"start"}                      (publishing begins)
//	parent → worker  {"type":"finish","log":…}             (publishing and drain are over)
//	worker → parent  {"type":"result","result":…}          (counts and the encoded histogram); it exits
//
// A storm worker (storm.go) is the same mode given {"type":"storm",
// "config":…,"storm":…} instead of "open": it answers "ready" at once,
// reports "stats" with storm counts, starts its share of the storm at
// "start", and at "finish" closes what it holds and sends its "result"
// with a storm result.
//
// A worker whose stdin closes before "finish" closes everything and exits.
type workerMsg struct {
	Type        string       `json:"type"`
	Config      *Config      `json:"config,omitempty"`
	Spec        *FleetSpec   `json:"spec,omitempty"`
	Storm       *StormSpec   `json:"storm,omitempty"`
	Log         *PublishLog  `json:"log,omitempty"`
	Stats       *FleetStats  `json:"stats,omitempty"`
	StormStats  *StormCounts `json:"storm_stats,omitempty"`
	Result      *FleetResult `json:"result,omitempty"`
	StormResult *StormResult `json:"storm_result,omitempty"`
	Error       string       `json:"error,omitempty"`
}

// workerGrace is how long an interrupted worker still waits for "finish".
const workerGrace = 10 * time.Second

// maxWorkerLine bounds one message; a result carries a histogram of some
// tens of kilobytes, a publish log one line per stream.
const maxWorkerLine = 64 << 20

// Worker is the hidden worker mode (`herald bench --worker`): it reads its
// share of a fleet from in, opens it, reports on out, and returns after
// "finish" (having written its result), when in closes, or workerGrace
// after ctx ends (its streams end with ctx at once). It reads in from a
// goroutine that ends only when in closes, so it is meant to own its
// process's stdin. Nothing but protocol messages may be written to out.
func Worker(ctx context.Context, in io.Reader, out io.Writer) error {
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	send := func(m workerMsg) error {
		mu.Lock()
		defer mu.Unlock()
		return enc.Encode(m)
	}
	msgs := make(chan workerMsg)
	readErr := make(chan error, 1)
	returned := make(chan struct{})
	defer close(returned)
	// The reader ends when in closes: the parent closes it, or dies.
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), maxWorkerLine)
		for sc.Scan() {
			var m workerMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				readErr <- fmt.Errorf("worker: bad message: %w", err)
				return
			}
			select {
			case msgs <- m:
			case <-returned:
				return
			}
		}
		readErr <- errors.Join(errors.New("worker: input closed"), sc.Err())
	}()
	// When ctx ends (Ctrl-C reaches the whole process group), the streams
	// end with it, but the parent, interrupted too, still wants the counts:
	// the worker waits a little longer for "finish".
	grace := make(chan struct{})
	stopGrace := context.AfterFunc(ctx, func() {
		time.AfterFunc(workerGrace, func() { close(grace) })
	})
	defer stopGrace()
	next := func() (workerMsg, error) {
		select {
		case m := <-msgs:
			return m, nil
		case err := <-readErr:
			return workerMsg{}, err
		case <-grace:
			return workerMsg{}, ctx.Err()
		}
	}

	m, err := next()
	if err != nil {
		return err
	}
	if m.Type == "storm" && m.Config != nil && m.Storm != nil {
		return stormWorker(ctx, *m.Config, *m.Storm, send, next)
	}
	if m.Type != "open" || m.Config == nil || m.Spec == nil {
		return fmt.Errorf("worker: expected open, got %q", m.Type)
	}
	cfg := *m.Config
	cfg.fill()
	env, err := newEnv(cfg, true)
	if err != nil {
		_ = send(workerMsg{Type: "error", Error: err.Error()})
		return err
	}
	defer env.close()
	env.dialer.offset(m.Spec.First)
	f := newLocalFleet(env, *m.Spec)
	defer f.Close()

	stopStats := sendStats(send, func() workerMsg {
		st := f.Stats()
		return workerMsg{Type: "stats", Stats: &st}
	})
	defer stopStats()

	if err := f.Open(ctx); err != nil {
		_ = send(workerMsg{Type: "error", Error: err.Error()})
		return err
	}
	st := f.Stats()
	if err := send(workerMsg{Type: "ready", Stats: &st}); err != nil {
		return err
	}
	for {
		m, err := next()
		if err != nil {
			return err
		}
		switch m.Type {
		case "start":
		case "finish":
			var log PublishLog
			if m.Log != nil {
				log = *m.Log
			}
			res, err := f.Finish(ctx, log)
			if err != nil {
				_ = send(workerMsg{Type: "error", Error: err.Error()})
				return err
			}
			return send(workerMsg{Type: "result", Result: res})
		default:
			return fmt.Errorf("worker: unexpected %q", m.Type)
		}
	}
}

// workerStatsEvery is how often a worker reports its running counts.
const workerStatsEvery = 200 * time.Millisecond

// sendStats sends what stats returns every workerStatsEvery until the
// returned stop is called (which waits for the sender) or a send fails.
func sendStats(send func(workerMsg) error, stats func() workerMsg) (stop func()) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		t := time.NewTicker(workerStatsEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if send(stats()) != nil {
					return
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// remoteFleet is a fleet spread over n worker processes.
type remoteFleet struct {
	e    *Env
	spec FleetSpec
	n    int

	mu        sync.Mutex
	procs     []*workerProc
	closeOnce sync.Once
}

type workerProc struct {
	id     int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tailBuffer

	mu    sync.Mutex
	stats FleetStats

	stormStats StormCounts

	ready       chan error        // one value: nil once open, or why not
	result      chan *FleetResult // one value
	stormResult chan *StormResult // one value
	failed      chan error        // a worker "error" after ready
	done        chan struct{}     // closed when its stdout ends
}

// Open starts the workers, hands each its share of the fleet, and waits
// until all are ready.
func (rf *remoteFleet) Open(ctx context.Context) error {
	e, spec, w := rf.e, rf.spec, rf.n
	per, extra := spec.Count/w, spec.Count%w
	first := spec.First
	parts := make([]FleetSpec, w)
	for j := range parts {
		part := spec
		part.First, part.Count = first, per
		if j < extra {
			part.Count++
		}
		first += part.Count
		parts[j] = part
	}
	err := startWorkers(ctx, e, w, e.Cfg.ConnectTimeout+30*time.Second, func(j int) workerMsg {
		return workerMsg{Type: "open", Spec: &parts[j]}
	}, func(p *workerProc) {
		rf.mu.Lock()
		rf.procs = append(rf.procs, p)
		rf.mu.Unlock()
	})
	if err != nil {
		rf.Close()
	}
	return err
}

// startWorkers starts n worker processes, gives worker j orders(j) (with
// the run's Config), hands each to keep, which owns it from then on, and
// waits up to readyIn until every one is ready.
func startWorkers(ctx context.Context, e *Env, n int, readyIn time.Duration, orders func(j int) workerMsg, keep func(*workerProc)) error {
	argv := e.Cfg.WorkerCommand
	if len(argv) == 0 {
		var err error
		if argv, err = defaultWorkerCommand(); err != nil {
			return err
		}
	}
	var started []*workerProc
	for j := range n {
		m := orders(j)
		cfg := e.Cfg
		m.Config = &cfg
		p, err := startWorker(j, argv, e.Cfg, m)
		if err != nil {
			return err
		}
		started = append(started, p)
		keep(p)
	}
	timeout := time.NewTimer(readyIn)
	defer timeout.Stop()
	for _, p := range started {
		var err error
		select {
		case err = <-p.ready:
		case <-p.done:
			err = p.exitErr("ended before it was ready")
		case <-ctx.Done():
			err = context.Cause(ctx)
		case <-timeout.C:
			err = p.exitErr("not ready in time")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (rf *remoteFleet) list() []*workerProc {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.procs
}

// startWorker starts worker id and sends it orders, its first message.
func startWorker(id int, argv []string, cfg Config, orders workerMsg) (*workerProc, error) {
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:gosec // our own executable, or the one the caller configured
	cmd.Env = append(os.Environ(), cfg.WorkerEnv...)
	p := &workerProc{
		id:          id,
		cmd:         cmd,
		stderr:      &tailBuffer{max: 4 << 10},
		ready:       make(chan error, 1),
		result:      make(chan *FleetResult, 1),
		stormResult: make(chan *StormResult, 1),
		failed:      make(chan error, 1),
		done:        make(chan struct{}),
	}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	go p.read(stdout) // ends when the process's stdout closes, at its exit
	if err := p.send(orders); err != nil {
		p.close()
		return nil, p.exitErr("did not take its orders: " + err.Error())
	}
	return p, nil
}

func (p *workerProc) send(m workerMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = p.stdin.Write(append(b, '\n'))
	return err
}

func (p *workerProc) read(stdout io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), maxWorkerLine)
	readySent := false
	for sc.Scan() {
		var m workerMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		switch m.Type {
		case "stats", "ready":
			p.mu.Lock()
			if m.Stats != nil {
				p.stats = *m.Stats
			}
			if m.StormStats != nil {
				p.stormStats = *m.StormStats
			}
			p.mu.Unlock()
			if m.Type == "ready" && !readySent {
				readySent = true
				p.ready <- nil
			}
		case "error":
			err := fmt.Errorf("worker %d: %s", p.id, m.Error)
			if !readySent {
				readySent = true
				p.ready <- err
			} else {
				select {
				case p.failed <- err:
				default:
				}
			}
		case "result":
			if m.StormResult != nil {
				if err := m.StormResult.decode(); err != nil {
					select {
					case p.failed <- fmt.Errorf("worker %d: histograms: %w", p.id, err):
					default:
					}
					continue
				}
				select {
				case p.stormResult <- m.StormResult:
				default:
				}
				continue
			}
			if m.Result == nil {
				continue
			}
			h, err := decodeHist(m.Result.Hist)
			if err != nil {
				select {
				case p.failed <- fmt.Errorf("worker %d: histogram: %w", p.id, err):
				default:
				}
				continue
			}
			m.Result.hist = h
			select {
			case p.result <- m.Result:
			default:
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
}

func (p *workerProc) exitErr(what string) error {
	msg := strings.TrimSpace(p.stderr.String())
	if msg == "" {
		return fmt.Errorf("worker %d %s", p.id, what)
	}
	return fmt.Errorf("worker %d %s: %s", p.id, what, msg)
}

// close ends the worker: closing its stdin tells it to close everything
// and exit; one that has not within 10s is killed.
func (p *workerProc) close() {
	_ = p.stdin.Close()
	exited := make(chan struct{})
	go func() {
		<-p.done
		_ = p.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
	}
}

func (rf *remoteFleet) Stats() FleetStats {
	var st FleetStats
	for _, p := range rf.list() {
		p.mu.Lock()
		s := p.stats
		p.mu.Unlock()
		st.add(s)
	}
	return st
}

func (rf *remoteFleet) Start() {
	for _, p := range rf.list() {
		_ = p.send(workerMsg{Type: "start"}) // a worker gone is found at Finish
	}
}

func (rf *remoteFleet) Finish(ctx context.Context, log PublishLog) (*FleetResult, error) {
	defer rf.Close()
	results, err := finishWorkers(ctx, rf.list(), workerMsg{Type: "finish", Log: &log}, 60*time.Second,
		func(p *workerProc) chan *FleetResult { return p.result })
	if err != nil {
		return nil, err
	}
	total := &FleetResult{hist: newHist()}
	for _, r := range results {
		total.merge(r)
	}
	return total, nil
}

// finishWorkers sends finish to every worker and waits, up to within in
// all, for the result each puts on the channel pick gives.
func finishWorkers[T any](ctx context.Context, procs []*workerProc, finish workerMsg, within time.Duration, pick func(*workerProc) chan T) ([]T, error) {
	for _, p := range procs {
		if err := p.send(finish); err != nil {
			return nil, p.exitErr("did not take finish: " + err.Error())
		}
	}
	var out []T
	timeout := time.NewTimer(within)
	defer timeout.Stop()
	for _, p := range procs {
		select {
		case r := <-pick(p):
			out = append(out, r)
		case err := <-p.failed:
			return nil, err
		case <-p.done:
			select {
			case r := <-pick(p):
				out = append(out, r)
				continue
			default:
			}
			return nil, p.exitErr("ended without a result")
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-timeout.C:
			return nil, p.exitErr("sent no result in time")
		}
	}
	return out, nil
}

func (rf *remoteFleet) Close() {
	rf.closeOnce.Do(func() {
		var wg sync.WaitGroup
		for _, p := range rf.list() {
			wg.Go(p.close)
		}
		wg.Wait()
	})
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
