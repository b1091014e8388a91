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
// A worker whose stdin closes before "finish" closes everything and exits.
type workerMsg struct {
	Type   string       `json:"type"`
	Config *Config      `json:"config,omitempty"`
	Spec   *FleetSpec   `json:"spec,omitempty"`
	Log    *PublishLog  `json:"log,omitempty"`
	Stats  *FleetStats  `json:"stats,omitempty"`
	Result *FleetResult `json:"result,omitempty"`
	Error  string       `json:"error,omitempty"`
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

	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				st := f.Stats()
				if send(workerMsg{Type: "stats", Stats: &st}) != nil {
					return
				}
			}
		}
	})

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

	ready  chan error        // one value: nil once open, or why not
	result chan *FleetResult // one value
	failed chan error        // a worker "error" after ready
	done   chan struct{}     // closed when its stdout ends
}

// Open starts the workers, hands each its share of the fleet, and waits
// until all are ready.
func (rf *remoteFleet) Open(ctx context.Context) error {
	e, spec, w := rf.e, rf.spec, rf.n
	argv := e.Cfg.WorkerCommand
	if len(argv) == 0 {
		var err error
		if argv, err = defaultWorkerCommand(); err != nil {
			return err
		}
	}
	per, extra := spec.Count/w, spec.Count%w
	first := spec.First
	for j := range w {
		part := spec
		part.First, part.Count = first, per
		if j < extra {
			part.Count++
		}
		first += part.Count
		p, err := startWorker(j, argv, e.Cfg, part)
		if err != nil {
			rf.Close()
			return err
		}
		rf.mu.Lock()
		rf.procs = append(rf.procs, p)
		rf.mu.Unlock()
	}
	timeout := time.NewTimer(e.Cfg.ConnectTimeout + 30*time.Second)
	defer timeout.Stop()
	for _, p := range rf.list() {
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
			rf.Close()
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

func startWorker(id int, argv []string, cfg Config, spec FleetSpec) (*workerProc, error) {
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:gosec // our own executable, or the one the caller configured
	cmd.Env = append(os.Environ(), cfg.WorkerEnv...)
	p := &workerProc{
		id:     id,
		cmd:    cmd,
		stderr: &tailBuffer{max: 4 << 10},
		ready:  make(chan error, 1),
		result: make(chan *FleetResult, 1),
		failed: make(chan error, 1),
		done:   make(chan struct{}),
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
	if err := p.send(workerMsg{Type: "open", Config: &cfg, Spec: &spec}); err != nil {
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
			if m.Stats != nil {
				p.mu.Lock()
				p.stats = *m.Stats
				p.mu.Unlock()
			}
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
	procs := rf.list()
	for _, p := range procs {
		if err := p.send(workerMsg{Type: "finish", Log: &log}); err != nil {
			return nil, p.exitErr("did not take finish: " + err.Error())
		}
	}
	total := &FleetResult{hist: newHist()}
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	for _, p := range procs {
		select {
		case r := <-p.result:
			total.merge(r)
		case err := <-p.failed:
			return nil, err
		case <-p.done:
			select {
			case r := <-p.result:
				total.merge(r)
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
	return total, nil
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
