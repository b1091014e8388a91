package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func do(t *testing.T, s *Server, want string, args ...string) {
	t.Helper()
	if got := s.Do(t, args...); got != want {
		t.Fatalf("%s on %s = %q, want %q", strings.Join(args, " "), s.Addr(), got, want)
	}
}

func TestRestartWithoutPersistIsEmpty(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	if u := s.URL(); u != "redis://"+s.Addr()+"/0" || !strings.HasPrefix(u, "redis://127.0.0.1:") {
		t.Errorf("URL = %q", u)
	}
	do(t, s, "OK", "SET", "k", "v")
	do(t, s, "v", "GET", "k")
	a := s.Addr()
	s.Stop()
	if s.Running() {
		t.Fatal("running after Stop")
	}
	if r, err := s.TryDo("PING"); err == nil {
		t.Fatalf("a stopped server answered %q", r)
	}
	s.Restart()
	if s.Addr() != a {
		t.Fatalf("restarted on %s, was %s", s.Addr(), a)
	}
	do(t, s, "(nil)", "GET", "k")
	do(t, s, "0", "DBSIZE")
}

func TestPersistSurvivesKill(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Persist: true})
	do(t, s, "[appendfsync always]", "CONFIG", "GET", "appendfsync")
	do(t, s, "OK", "SET", "k", "v1")
	s.Kill()
	s.Restart()
	do(t, s, "v1", "GET", "k")
	do(t, s, "OK", "SET", "k", "v2")
	s.Stop()
	s.Restart()
	do(t, s, "v2", "GET", "k")
}

func TestArgs(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Args: []string{"--maxmemory", "10mb"}})
	do(t, s, "[maxmemory 10485760]", "CONFIG", "GET", "maxmemory")
	// A restart keeps the arguments.
	s.Restart()
	do(t, s, "[maxmemory 10485760]", "CONFIG", "GET", "maxmemory")
	do(t, s, "OK", "DEBUG", "SLEEP", "0")
	if got := s.Do(t, "NO-SUCH-COMMAND"); !strings.HasPrefix(got, "ERR unknown command") {
		t.Fatalf("an unknown command answered %q, want the error text", got)
	}
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	s.Pause()
	_, err := command(s.Addr(), 200*time.Millisecond, "PING")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("PING to a paused server: %v, want a timeout", err)
	}
	s.Resume()
	do(t, s, "PONG", "PING")
	// A paused server still stops.
	s.Pause()
	s.Stop()
	if s.Running() {
		t.Fatal("running after Stop")
	}
}

func TestReplica(t *testing.T) {
	t.Parallel()
	m := Start(t, Options{})
	// Written before the replica starts, so that its full sync brings it.
	do(t, m, "OK", "SET", "k0", "v0")
	r := Start(t, Options{ReplicaOf: m})
	if role := r.Info(t, "replication", "role"); role != "slave" {
		t.Fatalf("replica's role is %q", role)
	}
	if got := r.Info(t, "replication", "master_port"); "127.0.0.1:"+got != m.Addr() {
		t.Fatalf("replica's master_port is %s, master is %s", got, m.Addr())
	}
	do(t, m, "OK", "SET", "k", "v")
	eventually(t, func() error {
		if got := r.Do(t, "GET", "k"); got != "v" {
			return fmt.Errorf("replica has k = %q", got)
		}
		return nil
	})
	// A restarted replica syncs again, from nothing of its own.
	r.Restart()
	do(t, m, "OK", "SET", "k2", "v2")
	eventually(t, func() error {
		if got := r.Do(t, "MGET", "k0", "k", "k2"); got != "[v0 v v2]" {
			return fmt.Errorf("replica has k, k2 = %s", got)
		}
		return nil
	})
	// Its full sync left an RDB file, which must not bring the data back
	// on a restart without Persist while the master is away.
	if _, err := os.Stat(filepath.Join(r.dir, "dump.rdb")); err != nil {
		t.Fatalf("the replica kept no RDB file from its sync: %v", err)
	}
	m.Kill()
	r.Restart()
	do(t, r, "0", "DBSIZE")
}

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	m := Start(t, Options{})
	r := Start(t, Options{ReplicaOf: m})
	ss := StartSentinels(t, m, "herald", 3, 2)
	if got := ss.Master(t); got != m.Addr() {
		t.Fatalf("master is %s, want %s", got, m.Addr())
	}
	as := ss.Addrs()
	if len(as) != 3 {
		t.Fatalf("%d sentinel addresses, want 3", len(as))
	}
	u, err := url.Parse(ss.URL(2))
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "redis" || u.Host != as[0] || u.Path != "/2" || u.Query().Get("master_name") != "herald" || !slices.Equal(u.Query()["addr"], as[1:]) {
		t.Fatalf("URL %s does not name the sentinels %v", ss.URL(2), as)
	}
	if got := ss.Do(t, 1, "SENTINEL", "get-master-addr-by-name", "herald"); got != "["+strings.Replace(m.Addr(), ":", " ", 1)+"]" {
		t.Fatalf("sentinel 1 names master %s", got)
	}
	do(t, m, "OK", "SET", "k", "before")

	ss.Failover(t)
	if got := ss.Master(t); got != r.Addr() {
		t.Fatalf("master after failover is %s, want the replica %s", got, r.Addr())
	}
	if role := r.Info(t, "replication", "role"); role != "master" {
		t.Fatalf("promoted replica's role is %q", role)
	}
	do(t, r, "before", "GET", "k")
	do(t, r, "OK", "SET", "k", "after")
}

func TestCluster(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3)
	nodes := c.Nodes()
	if len(nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes))
	}
	for _, n := range nodes {
		if st := n.Info(t, "cluster", "cluster_enabled"); st != "1" {
			t.Fatalf("node %s: cluster_enabled %s", n.Addr(), st)
		}
		if st := infoField(n.Do(t, "CLUSTER", "INFO"), "cluster_state"); st != "ok" {
			t.Fatalf("node %s: cluster_state %s", n.Addr(), st)
		}
	}
	u, err := url.Parse(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	if u.Host != nodes[0].Addr() || !slices.Equal(u.Query()["addr"], []string{nodes[1].Addr(), nodes[2].Addr()}) {
		t.Fatalf("URL %s does not name the nodes", c.URL())
	}

	// The keys are spread so that each node owns one; the tag keeps the
	// two keys of a node on one slot.
	owners := map[*Server]bool{}
	for _, tag := range []string{"a", "b", "c", "d", "e", "f"} {
		key, other := "{"+tag+"}k", "{"+tag+"}other"
		if got := c.Do(t, "MSET", key, "v"+tag, other, "o"+tag); got != "OK" {
			t.Fatalf("MSET of %s through the cluster: %s", key, got)
		}
		owner := c.NodeFor(t, key)
		owners[owner] = true
		if got := owner.Do(t, "MGET", key, other); got != "[v"+tag+" o"+tag+"]" {
			t.Fatalf("owner %s has %s = %s", owner.Addr(), key, got)
		}
		if got := c.Do(t, "GET", key); got != "v"+tag {
			t.Fatalf("GET %s through the cluster: %s", key, got)
		}
		slot := owner.Do(t, "CLUSTER", "KEYSLOT", key)
		for _, n := range nodes {
			if n == owner {
				continue
			}
			if got, want := n.Do(t, "GET", key), "MOVED "+slot+" "+owner.Addr(); got != want {
				t.Fatalf("GET %s on %s: %q, want %q", key, n.Addr(), got, want)
			}
		}
	}
	if len(owners) != 3 {
		t.Fatalf("the keys landed on %d nodes, want 3", len(owners))
	}
}

func TestMissingServerFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	got := fatalOf(func(tb testing.TB) { Start(tb, Options{}) })
	if want := "redis-server not found: run make test (scripts/install-test-deps.sh)"; got != want {
		t.Fatalf("Fatalf %q, want %q", got, want)
	}
}

// fatalRecorder records the message of a Fatalf; any other method of
// testing.TB panics on the nil TB it embeds.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func fatalOf(body func(tb testing.TB)) string {
	f := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(f)
	}()
	<-done
	return f.msg
}

func TestReplyRendering(t *testing.T) {
	for _, c := range []struct{ wire, want string }{
		{"+OK\r\n", "OK"},
		{"-ERR unknown command 'x'\r\n", "ERR unknown command 'x'"},
		{":42\r\n", "42"},
		{"$5\r\nhel\r\n\r\n", "hel\r\n"},
		{"$0\r\n\r\n", ""},
		{"$-1\r\n", "(nil)"},
		{"*-1\r\n", "(nil)"},
		{"*0\r\n", "[]"},
		{"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n", "[127.0.0.1 6379]"},
		{"*3\r\n*1\r\n:1\r\n$-1\r\n+x\r\n", "[[1] (nil) x]"},
		{"_\r\n", "(nil)"},
		{",3.5\r\n", "3.5"},
		{"#t\r\n", "t"},
		{"%1\r\n+role\r\n+master\r\n", "[role master]"},
		{"~2\r\n:1\r\n:2\r\n", "[1 2]"},
		{"=8\r\ntxt:some\r\n", "some"},
		{"!9\r\nERR whoa!\r\n", "ERR whoa!"},
		{"|1\r\n+ttl\r\n:3\r\n+OK\r\n", "OK"},
	} {
		r, err := readReply(bufio.NewReader(strings.NewReader(c.wire)), 0)
		if err != nil {
			t.Errorf("%q: %v", c.wire, err)
			continue
		}
		if got := r.String(); got != c.want {
			t.Errorf("%q renders %q, want %q", c.wire, got, c.want)
		}
	}
	if r, _ := readReply(bufio.NewReader(strings.NewReader("!3\r\nERR\r\n")), 0); !r.isError() {
		t.Error("a blob error is not an error reply")
	}
}

func TestReplyMalformed(t *testing.T) {
	for _, wire := range []string{
		"",
		"+OK\n",
		"\r\n",
		"?x\r\n",
		"$abc\r\n",
		"$5\r\nhel",
		"$3\r\nhelxx",
		"$99999999999\r\n",
		"*99999999999\r\n",
		"*2\r\n+a\r\n",
		strings.Repeat("*1\r\n", 40) + ":1\r\n",
	} {
		if r, err := readReply(bufio.NewReader(strings.NewReader(wire)), 0); err == nil {
			t.Errorf("%q read as %q, want an error", wire, r)
		}
	}
}

func TestCommandEncoding(t *testing.T) {
	got := string(appendCommand(nil, []string{"SET", "k", "", "a b\r\n"}))
	want := "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$5\r\na b\r\n\r\n"
	if got != want {
		t.Fatalf("encoded %q, want %q", got, want)
	}
}

func eventually(t *testing.T, check func() error) {
	t.Helper()
	if err := poll(readyTimeout, check); err != nil {
		t.Fatal(err)
	}
}
