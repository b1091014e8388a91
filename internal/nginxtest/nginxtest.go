// Package nginxtest runs a real nginx in front of herald's tests, on a
// free loopback port with everything it writes under the test's temp
// dir, so that proxied streams meet a real proxy's buffering, timeouts
// and reloads.
package nginxtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/herald-hub/herald/internal/proctest"
)

const (
	// readyTimeout bounds a start, from exec to the port accepting.
	readyTimeout = 10 * time.Second
	// reloadTimeout bounds a reload, from SIGHUP to the old workers
	// having stopped accepting.
	reloadTimeout = 10 * time.Second
	bindAttempts  = 3
	pollInterval  = 20 * time.Millisecond
)

// Vars are what a config template can use.
type Vars struct {
	// Port is the free port nginx is to listen on, 127.0.0.1:{{.Port}}.
	Port int
	// Dir is the test's temp dir, for the pid file, logs and temp paths.
	Dir string
}

// Nginx is an nginx master process of a test, with its workers.
type Nginx struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	log  *proctest.Log
	proc *proctest.Process
}

// HTTP returns a whole nginx.conf around body, the content of an http
// block (upstreams and servers): one worker, the pid file, the error and
// access logs and every temp path under {{.Dir}}, and, when the tests
// run as root, workers running as root so that they can use that dir.
func HTTP(body string) string {
	var b strings.Builder
	if os.Geteuid() == 0 {
		b.WriteString("user root;\n")
	}
	b.WriteString(`worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx.log notice;
events {
	worker_connections 1024;
}
http {
	access_log {{.Dir}}/access.log;
	client_body_temp_path {{.Dir}}/client_body_temp;
	proxy_temp_path {{.Dir}}/proxy_temp;
	fastcgi_temp_path {{.Dir}}/fastcgi_temp;
	uwsgi_temp_path {{.Dir}}/uwsgi_temp;
	scgi_temp_path {{.Dir}}/scgi_temp;
`)
	b.WriteString(body)
	b.WriteString("\n}\n")
	return b.String()
}

var usesPort = regexp.MustCompile(`\{\{-?\s*\.Port\s*-?\}\}`)

// Start runs nginx with conf, a text/template of a whole nginx.conf that
// listens on 127.0.0.1:{{.Port}} and keeps its pid file, logs and temp
// paths under {{.Dir}} (HTTP writes such a config around an http block).
// The config must not set daemon: nginx runs in the foreground, as a
// master with workers, so that Reload is nginx's own graceful reload.
// Start returns once the port accepts connections; the test's cleanup
// stops nginx and waits for it.
func Start(t testing.TB, conf string) *Nginx {
	t.Helper()
	if !usesPort.MatchString(conf) {
		t.Fatalf("nginx config does not listen on {{.Port}}:\n%s", conf)
	}
	n := &Nginx{t: t, bin: proctest.Binary(t, "nginx"), dir: t.TempDir()}
	n.log = proctest.NewLog(t, filepath.Join(n.dir, "nginx.log"))
	for attempt := 1; ; attempt++ {
		n.port = proctest.FreePorts(t, 1)[0]
		n.write(conf)
		mark := n.log.Size()
		p, err := proctest.Start(t, proctest.Cmd{Path: n.bin, Args: n.args("-g", "daemon off;"), Log: n.log, Group: true})
		if err != nil {
			t.Fatalf("nginx: %v", err)
		}
		err = n.waitReady(p)
		if err == nil {
			n.proc = p
			t.Cleanup(n.Stop)
			return n
		}
		p.Kill()
		_ = p.Wait(proctest.WaitTimeout)
		if attempt < bindAttempts && proctest.AddrInUse(n.log.Since(mark)) {
			continue
		}
		t.Fatalf("nginx on %s: %v", n.Addr(), err)
	}
}

// args are the command-line arguments that point nginx at the temp dir:
// its prefix, the config, and the log for what it reports before reading
// the config.
func (n *Nginx) args(extra ...string) []string {
	return append([]string{
		"-p", n.dir + "/",
		"-c", n.confPath(),
		"-e", n.log.Path(),
	}, extra...)
}

func (n *Nginx) confPath() string { return filepath.Join(n.dir, "nginx.conf") }

func (n *Nginx) write(conf string) {
	n.t.Helper()
	tmpl, err := template.New("nginx.conf").Option("missingkey=error").Parse(conf)
	if err != nil {
		n.t.Fatalf("nginx config template: %v", err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, Vars{Port: n.port, Dir: n.dir}); err != nil {
		n.t.Fatalf("nginx config template: %v", err)
	}
	if err := os.WriteFile(n.confPath(), b.Bytes(), 0o600); err != nil {
		n.t.Fatalf("nginx config: %v", err)
	}
}

func (n *Nginx) waitReady(p *proctest.Process) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if p.Exited() {
			return fmt.Errorf("exited while starting: %v", p.Err())
		}
		c, err := net.DialTimeout("tcp", n.Addr(), time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port not accepting after %v: %w", readyTimeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// Addr returns the address nginx listens on, "127.0.0.1:port".
func (n *Nginx) Addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// URL returns "http://127.0.0.1:port".
func (n *Nginx) URL() string { return "http://" + n.Addr() }

// Dir returns the temp dir that holds the config, logs and temp files.
func (n *Nginx) Dir() string { return n.dir }

// Reload rewrites the config (same template variables, same port) and
// has nginx reload it with SIGHUP: new workers take new connections,
// while connections already open stay with the old workers until they
// end. Reload returns once every old worker has stopped accepting, so
// the next connection meets the new config. A config nginx rejects fails
// the test and leaves the old one running.
func (n *Nginx) Reload(conf string) {
	n.t.Helper()
	n.write(conf)
	if out, err := exec.Command(n.bin, n.args("-t", "-q")...).CombinedOutput(); err != nil {
		n.t.Fatalf("nginx rejects the new config: %v\n%s", err, out)
	}
	old := workers(n.proc.Pid())
	if err := n.proc.Signal(syscall.SIGHUP); err != nil {
		n.t.Fatalf("nginx reload: %v", err)
	}
	deadline := time.Now().Add(reloadTimeout)
	for !reloaded(old, workers(n.proc.Pid())) {
		if n.proc.Exited() {
			n.t.Fatalf("nginx exited while reloading: %v", n.proc.Err())
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nginx did not reload within %v", reloadTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// reloaded reports whether a worker not in old is running, and every
// worker in old has gone or is shutting down. An old worker sets that
// title as it closes its listening sockets; until then it may still take
// a new connection with the old config.
func reloaded(old, now map[int]string) bool {
	fresh := false
	for pid, title := range now {
		_, before := old[pid]
		switch {
		case before && !strings.Contains(title, "shutting down"):
			return false
		case !before && !strings.Contains(title, "shutting down"):
			fresh = true
		}
	}
	return fresh
}

// workers returns the worker processes of the master, by pid, with the
// title nginx gives each ("nginx: worker process", then "nginx: worker
// process is shutting down").
func workers(master int) map[int]string {
	ws := map[int]string{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return ws
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(master) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		title := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		if strings.Contains(title, "worker process") {
			ws[pid] = title
		}
	}
	return ws
}

// Stop shuts nginx down fast (SIGTERM: connections are closed, not
// drained) and waits for the master and its workers to exit. It runs at
// cleanup, and may be called earlier to take the proxy away.
func (n *Nginx) Stop() {
	n.t.Helper()
	if n.proc.Exited() {
		return
	}
	if err := n.proc.Signal(syscall.SIGTERM); err != nil {
		n.t.Errorf("stop nginx: %v", err)
	}
	if err := n.proc.Wait(proctest.WaitTimeout); err != nil {
		n.t.Errorf("stop nginx: %v", err)
		n.proc.Kill()
		_ = n.proc.Wait(proctest.WaitTimeout)
	}
}
