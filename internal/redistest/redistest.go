// Package redistest starts real redis-server and redis-sentinel processes,
// and Redis clusters, on free loopback ports for herald's tests, and
// drives them with a small RESP client of its own, so that no Redis
// client library stands between a test and the server it checks.
//
// Every server belongs to the test that started it: the test's cleanup
// kills it and waits for it, its output goes to a log in the test's temp
// dir whose tail is shown when the test fails, and every wait is bounded.
// A missing redis-server fails the test: make test installs it.
package redistest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-hub/herald/internal/proctest"
)

const (
	// readyTimeout bounds a server's start, from exec to answering PING
	// (and, for a replica, to its link with the master being up).
	readyTimeout = 10 * time.Second
	// stopTimeout bounds Stop: a master shutting down waits up to
	// Redis's shutdown-timeout (10 s) for lagging replicas first.
	stopTimeout = 15 * time.Second
	// doTimeout bounds one command of Do, DEBUG SLEEP included.
	doTimeout = 10 * time.Second
	// probeTimeout bounds one command of a polling loop.
	probeTimeout = time.Second
	// pollInterval is the pause between two probes of a polling loop.
	pollInterval = 20 * time.Millisecond
	// bindAttempts is how many ports a server tries before giving up.
	bindAttempts = 3
)

// Options configures a server started with Start. The zero value is a
// master that keeps nothing on disk.
type Options struct {
	// Persist turns on the append-only file, fsynced on every write, so
	// the data survives Stop, Kill and Restart.
	Persist bool
	// ReplicaOf starts the server as a replica of this server; Start
	// returns once the replica's link with it is up.
	ReplicaOf *Server
	// Args are extra redis-server arguments, such as "--maxmemory", "10mb".
	Args []string
}

// Server is a redis-server process of a test.
type Server struct {
	t       testing.TB
	bin     string
	opts    Options
	dir     string
	log     *proctest.Log
	cluster bool // cluster-enabled, with its bus on busPort

	mu      sync.Mutex // guards the fields below, which Restart changes
	port    int
	busPort int
	proc    *proctest.Process
}

// Start starts a redis-server on a free loopback port, with a temp dir of
// the test as its dir, and returns once it answers PING. The test's
// cleanup kills it.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := newServer(t, opts)
	s.launch(false)
	return s
}

func newServer(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := proctest.Binary(t, "redis-server")
	dir := t.TempDir()
	return &Server{
		t:    t,
		bin:  bin,
		opts: opts,
		dir:  dir,
		log:  proctest.NewLog(t, filepath.Join(dir, "redis.log")),
	}
}

// Addr returns the server's address, "127.0.0.1:port".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return addr(s.port)
}

// URL returns a redis URL for database 0 of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func (s *Server) args() []string {
	a := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--dir", s.dir,
		// No snapshots: without Persist, a restarted server is empty.
		"--save", "",
		// Tests use DEBUG SLEEP and DEBUG SET-ACTIVE-EXPIRE; Redis 7
		// refuses DEBUG by default.
		"--enable-debug-command", "yes",
		// A full sync starts at once instead of waiting 5 s for more
		// replicas to share it.
		"--repl-diskless-sync-delay", "0",
	}
	if s.opts.Persist {
		a = append(a, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		a = append(a, "--appendonly", "no")
	}
	if m := s.opts.ReplicaOf; m != nil {
		m.mu.Lock()
		a = append(a, "--replicaof", "127.0.0.1", strconv.Itoa(m.port))
		m.mu.Unlock()
	}
	if s.cluster {
		a = append(a,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(s.busPort),
			"--cluster-node-timeout", "5000",
		)
	}
	return append(a, s.opts.Args...)
}

// launch starts the process and waits until it is ready; samePort keeps
// the port (a restart), otherwise free ports are picked, and picked again
// when another process took one first.
func (s *Server) launch(samePort bool) {
	t := s.t
	t.Helper()
	for attempt := 1; ; attempt++ {
		s.mu.Lock()
		if !samePort {
			if s.cluster {
				ports := proctest.FreePorts(t, 2)
				s.port, s.busPort = ports[0], ports[1]
			} else {
				s.port = proctest.FreePorts(t, 1)[0]
			}
		}
		args := s.args()
		s.mu.Unlock()
		mark := s.log.Size()
		p, err := proctest.Start(t, proctest.Cmd{Path: s.bin, Args: args, Log: s.log})
		if err != nil {
			t.Fatalf("redis-server: %v", err)
		}
		err = s.waitReady(p, !samePort)
		if err == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return
		}
		p.Kill()
		_ = p.Wait(proctest.WaitTimeout)
		if attempt < bindAttempts && proctest.AddrInUse(s.log.Since(mark)) {
			if samePort {
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		t.Fatalf("redis-server %s: %v", s.Addr(), err)
	}
}

// waitReady polls until the server answers PING and has loaded its data,
// and, when first started as a replica, until its link with the master is
// up, so that a test can rely on replication from its first write.
func (s *Server) waitReady(p *proctest.Process, first bool) error {
	a := s.Addr()
	return poll(readyTimeout, func() error {
		if p.Exited() {
			return permanent{fmt.Errorf("exited while starting: %v", p.Err())}
		}
		return s.ready(a, first)
	})
}

// permanent marks an error that ends a poll at once.
type permanent struct{ error }

// poll calls check until it returns nil or a permanent error, or until
// timeout has passed, and returns check's last error.
func poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(pollInterval)
	}
}

func (s *Server) ready(a string, first bool) error {
	r, err := command(a, probeTimeout, "PING")
	if err != nil {
		return err
	}
	if r.text != "PONG" {
		return fmt.Errorf("PING answered %q", r)
	}
	r, err = command(a, probeTimeout, "INFO", "persistence")
	if err != nil {
		return err
	}
	if infoField(r.text, "loading") != "0" {
		return errors.New("still loading its data")
	}
	if s.opts.ReplicaOf != nil && first {
		r, err = command(a, probeTimeout, "INFO", "replication")
		if err != nil {
			return err
		}
		if st := infoField(r.text, "master_link_status"); st != "up" {
			return fmt.Errorf("link with master %s is %q", s.opts.ReplicaOf.Addr(), st)
		}
	}
	return nil
}

func (s *Server) current() *proctest.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Stop sends SIGTERM and waits for the server to exit. Without Persist it
// saves nothing. A paused server is resumed so that it can stop.
func (s *Server) Stop() {
	s.t.Helper()
	p := s.current()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatalf("stop redis-server %s: %v", s.Addr(), err)
	}
	_ = p.Signal(syscall.SIGCONT)
	if err := p.Wait(stopTimeout); err != nil {
		s.t.Fatalf("stop redis-server %s: %v", s.Addr(), err)
	}
}

// Kill sends SIGKILL and waits for the server to exit.
func (s *Server) Kill() {
	s.t.Helper()
	p := s.current()
	p.Kill()
	if err := p.Wait(proctest.WaitTimeout); err != nil {
		s.t.Fatalf("kill redis-server %s: %v", s.Addr(), err)
	}
}

// Pause stops the process with SIGSTOP: connections stay open and
// commands go unanswered, as with a server stalled by a long fork or a
// swapping host.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.current().Signal(sig); err != nil {
		s.t.Fatalf("redis-server %s: %v", s.Addr(), err)
	}
}

// Running reports whether the server's process is alive (paused or not).
func (s *Server) Running() bool { return !s.current().Exited() }

// Restart starts the server again on the same port and dir with the same
// options, stopping it first if it still runs, and returns once it
// answers PING with its data loaded. Without Persist it comes back empty:
// the RDB file a replica keeps from its last full sync is removed first.
// A replica is not waited for to link with its master again.
func (s *Server) Restart() {
	s.t.Helper()
	if s.Running() {
		s.Stop()
	}
	if !s.opts.Persist {
		if err := os.Remove(filepath.Join(s.dir, "dump.rdb")); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.t.Fatalf("restart redis-server: %v", err)
		}
	}
	s.launch(true)
}

// Do sends one command and returns its reply rendered as a string: a
// simple or bulk string or an integer as its text, an error reply as its
// message ("ERR ..."), a null as "(nil)", an array as "[a b c]". A failed
// connection or a reply not in within 10 s fails the test.
func (s *Server) Do(t testing.TB, args ...string) string {
	t.Helper()
	r, err := s.TryDo(args...)
	if err != nil {
		t.Fatalf("redis %s: %v", s.Addr(), err)
	}
	return r
}

// TryDo is Do for a server that may not answer, such as a paused or killed
// one: it returns the connection's failure instead of failing the test.
func (s *Server) TryDo(args ...string) (string, error) {
	r, err := command(s.Addr(), doTimeout, args...)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// Info returns one field of INFO section, "" when it is absent.
func (s *Server) Info(t testing.TB, section, field string) string {
	t.Helper()
	return infoField(s.Do(t, "INFO", section), field)
}
