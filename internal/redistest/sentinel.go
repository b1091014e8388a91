package redistest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/internal/proctest"
)

const (
	// downAfter and failoverTimeout are the Sentinel settings (in ms)
	// that make a failover take a couple of seconds instead of minutes.
	downAfter       = 1000
	failoverTimeout = 3000
	// settleTimeout bounds the wait for sentinels to find each other:
	// they announce themselves on the master every 2 s.
	settleTimeout = 20 * time.Second
	// failoverWait bounds a failover, from the request to every sentinel
	// naming the promoted replica.
	failoverWait = 20 * time.Second
)

// Sentinels is a group of redis-sentinel processes watching one master.
type Sentinels struct {
	t     testing.TB
	name  string
	ports []int
}

// StartSentinels starts n sentinels on free ports, watching master under
// name with the given quorum, and returns once every sentinel knows the
// master, each of its connected replicas (linked and answering) and the
// other sentinels, so that a failover can be asked for at once. Down
// detection takes 1 s and a failover times out after 3 s.
func StartSentinels(t testing.TB, master *Server, name string, n, quorum int) *Sentinels {
	t.Helper()
	if n < 1 || quorum < 1 || quorum > n {
		t.Fatalf("StartSentinels: want 1 <= quorum <= n, got quorum %d, n %d", quorum, n)
	}
	if name == "" || strings.ContainsAny(name, " \t\r\n\"'\\") {
		t.Fatalf("StartSentinels: master name %q is not one plain word", name)
	}
	bin := proctest.Binary(t, "redis-sentinel")
	replicas, err := strconv.Atoi(master.Info(t, "replication", "connected_slaves"))
	if err != nil {
		t.Fatalf("StartSentinels: master %s: connected_slaves: %v", master.Addr(), err)
	}
	ss := &Sentinels{t: t, name: name}
	for range n {
		ss.ports = append(ss.ports, startSentinel(t, bin, master.Addr(), name, quorum))
	}
	if err := ss.waitSettled(master.Addr(), replicas); err != nil {
		t.Fatalf("sentinels for %s: %v", name, err)
	}
	return ss
}

// startSentinel starts one sentinel with a config file of its own, which
// Sentinel insists on being able to rewrite, and returns its port.
func startSentinel(t testing.TB, bin, master, name string, quorum int) int {
	t.Helper()
	host, port, err := net.SplitHostPort(master)
	if err != nil {
		t.Fatalf("sentinel: master address: %v", err)
	}
	dir := t.TempDir()
	log := proctest.NewLog(t, filepath.Join(dir, "sentinel.log"))
	conf := filepath.Join(dir, "sentinel.conf")
	for attempt := 1; ; attempt++ {
		p := proctest.FreePorts(t, 1)[0]
		text := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
daemonize no
dir %q
sentinel monitor %s %s %s %d
sentinel down-after-milliseconds %[3]s %[7]d
sentinel failover-timeout %[3]s %[8]d
sentinel parallel-syncs %[3]s 1
`, p, dir, name, host, port, quorum, downAfter, failoverTimeout)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatalf("sentinel: %v", err)
		}
		mark := log.Size()
		proc, err := proctest.Start(t, proctest.Cmd{Path: bin, Args: []string{conf}, Log: log})
		if err != nil {
			t.Fatalf("redis-sentinel: %v", err)
		}
		err = poll(readyTimeout, func() error {
			if proc.Exited() {
				return permanent{fmt.Errorf("exited while starting: %v", proc.Err())}
			}
			r, err := command(addr(p), probeTimeout, "PING")
			if err != nil {
				return err
			}
			if r.text != "PONG" {
				return fmt.Errorf("PING answered %q", r)
			}
			return nil
		})
		if err == nil {
			return p
		}
		proc.Kill()
		_ = proc.Wait(proctest.WaitTimeout)
		if attempt < bindAttempts && proctest.AddrInUse(log.Since(mark)) {
			continue
		}
		t.Fatalf("redis-sentinel %s: %v", addr(p), err)
	}
}

func (ss *Sentinels) waitSettled(master string, replicas int) error {
	return poll(settleTimeout, func() error {
		for _, p := range ss.ports {
			a := addr(p)
			m, err := masterOf(a, ss.name)
			if err != nil {
				return err
			}
			if m != master {
				return fmt.Errorf("sentinel %s names master %q, not %s", a, m, master)
			}
			r, err := command(a, probeTimeout, "SENTINEL", "replicas", ss.name)
			if err != nil {
				return err
			}
			if len(r.elems) != replicas {
				return fmt.Errorf("sentinel %s knows %d of %d replicas", a, len(r.elems), replicas)
			}
			for _, e := range r.elems {
				// A replica the sentinel has not heard from yet cannot be
				// promoted: SENTINEL FAILOVER would answer NOGOODSLAVE.
				f := e.fields()
				if f["flags"] != "slave" || f["master-link-status"] != "ok" {
					return fmt.Errorf("sentinel %s sees replica %s with flags %s, link %s", a, f["name"], f["flags"], f["master-link-status"])
				}
			}
			r, err = command(a, probeTimeout, "SENTINEL", "sentinels", ss.name)
			if err != nil {
				return err
			}
			if len(r.elems) != len(ss.ports)-1 {
				return fmt.Errorf("sentinel %s knows %d of the %d other sentinels", a, len(r.elems), len(ss.ports)-1)
			}
		}
		return nil
	})
}

// masterOf asks the sentinel at a for the address of the master it knows
// as name.
func masterOf(a, name string) (string, error) {
	r, err := command(a, probeTimeout, "SENTINEL", "get-master-addr-by-name", name)
	if err != nil {
		return "", err
	}
	if r.isError() {
		return "", fmt.Errorf("sentinel %s: %s", a, r.text)
	}
	if len(r.elems) != 2 {
		return "", fmt.Errorf("sentinel %s knows no master %s: %s", a, name, r)
	}
	return net.JoinHostPort(r.elems[0].text, r.elems[1].text), nil
}

// Addrs returns the sentinels' addresses.
func (ss *Sentinels) Addrs() []string {
	as := make([]string, len(ss.ports))
	for i, p := range ss.ports {
		as[i] = addr(p)
	}
	return as
}

// URL returns the URL of database db behind the sentinels, in the form
// go-redis's ParseFailoverURL reads: the first sentinel as the host, the
// others as addr parameters.
func (ss *Sentinels) URL(db int) string {
	as := ss.Addrs()
	var b strings.Builder
	fmt.Fprintf(&b, "redis://%s/%d?master_name=%s", as[0], db, url.QueryEscape(ss.name))
	for _, a := range as[1:] {
		b.WriteString("&addr=")
		b.WriteString(a)
	}
	return b.String()
}

// Master returns the address of the current master, as the first
// sentinel names it.
func (ss *Sentinels) Master(t testing.TB) string {
	t.Helper()
	m, err := masterOf(addr(ss.ports[0]), ss.name)
	if err != nil {
		t.Fatalf("master %s: %v", ss.name, err)
	}
	return m
}

// Do sends one command to sentinel i and renders its reply as Server.Do
// does.
func (ss *Sentinels) Do(t testing.TB, i int, args ...string) string {
	t.Helper()
	r, err := command(addr(ss.ports[i]), doTimeout, args...)
	if err != nil {
		t.Fatalf("sentinel %s: %v", addr(ss.ports[i]), err)
	}
	return r.String()
}

// Failover asks the first sentinel for a failover and returns once every
// sentinel names a new master and that master reports role:master. The
// old master is turned into a replica by the sentinels afterwards, in its
// own time.
func (ss *Sentinels) Failover(t testing.TB) {
	t.Helper()
	old := ss.Master(t)
	first := addr(ss.ports[0])
	err := poll(failoverWait, func() error {
		r, err := command(first, probeTimeout, "SENTINEL", "FAILOVER", ss.name)
		switch {
		case err != nil:
			return err
		case !r.isError(), strings.HasPrefix(r.text, "INPROG"):
			return nil
		case strings.HasPrefix(r.text, "NOGOODSLAVE"):
			return fmt.Errorf("SENTINEL FAILOVER: %s", r.text)
		default:
			return permanent{fmt.Errorf("SENTINEL FAILOVER: %s", r.text)}
		}
	})
	if err != nil {
		t.Fatalf("failover %s: %v", ss.name, err)
	}
	err = poll(failoverWait, func() error {
		var now string
		for _, p := range ss.ports {
			m, err := masterOf(addr(p), ss.name)
			if err != nil {
				return err
			}
			if m == old {
				return fmt.Errorf("sentinel %s still names %s", addr(p), old)
			}
			if now != "" && m != now {
				return fmt.Errorf("sentinels name both %s and %s", now, m)
			}
			now = m
		}
		r, err := command(now, probeTimeout, "INFO", "replication")
		if err != nil {
			return err
		}
		if role := infoField(r.text, "role"); role != "master" {
			return fmt.Errorf("new master %s has role %s", now, role)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("failover %s from %s: %v", ss.name, old, err)
	}
}
