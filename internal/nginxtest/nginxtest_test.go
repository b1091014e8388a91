package nginxtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upstream starts an HTTP server that names itself and the path it was
// asked for.
func upstream(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", name, r.URL.Path, r.Header.Get("X-Proxied-By"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func proxyTo(srv *httptest.Server) string {
	return HTTP(`
	server {
		listen 127.0.0.1:{{.Port}};
		location / {
			proxy_pass ` + srv.URL + `;
			proxy_set_header X-Proxied-By nginx;
			proxy_buffering off;
		}
	}`)
}

func newClient(t *testing.T) *http.Client {
	// A new connection per request, so that each meets the current
	// config; one kept alive would stay with an old worker.
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func TestProxy(t *testing.T) {
	up := upstream(t, "a")
	n := Start(t, proxyTo(up))
	c := newClient(t)
	if got, want := get(t, c, n.URL()+"/hello"), "a /hello nginx"; got != want {
		t.Fatalf("through nginx: %q, want %q", got, want)
	}
	// nginx logs in the test's dir, not under /var/log.
	access, err := os.ReadFile(filepath.Join(n.Dir(), "access.log"))
	if err != nil || !strings.Contains(string(access), "GET /hello ") {
		t.Fatalf("access log: %v\n%s", err, access)
	}

	master := n.proc.Pid()
	if len(workers(master)) == 0 {
		t.Fatal("no worker process found")
	}
	n.Stop()
	if c, err := net.Dial("tcp", n.Addr()); err == nil {
		_ = c.Close()
		t.Fatal("nginx still accepts after Stop")
	}
	if ws := workers(master); len(ws) != 0 {
		t.Fatalf("workers left after Stop: %v", ws)
	}
}

func TestReload(t *testing.T) {
	release := make(chan struct{})
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "old first")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
			fmt.Fprintln(w, "old second")
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(old.Close)
	fresh := upstream(t, "new")
	n := Start(t, proxyTo(old))
	c := newClient(t)

	// A stream opened before the reload stays with the old worker and
	// the old upstream until it ends.
	resp, err := c.Get(n.URL() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body := bufio.NewReader(resp.Body)
	if line, err := body.ReadString('\n'); err != nil || line != "old first\n" {
		t.Fatalf("stream before the reload: %q, %v", line, err)
	}

	n.Reload(proxyTo(fresh))
	for range 5 {
		if got, want := get(t, c, n.URL()+"/x"), "new /x nginx"; got != want {
			t.Fatalf("after the reload: %q, want %q", got, want)
		}
	}

	close(release)
	if rest, err := io.ReadAll(body); err != nil || string(rest) != "old second\n" {
		t.Fatalf("stream across the reload ended with %q, %v", rest, err)
	}
}

func TestStartNeedsPort(t *testing.T) {
	for _, conf := range []string{"{{.Port}}", "{{ .Port }}", "{{- .Port -}}"} {
		if !usesPort.MatchString(conf) {
			t.Errorf("%q is not seen to use the port", conf)
		}
	}
	if usesPort.MatchString(HTTP("server { listen 127.0.0.1:8080; }")) {
		t.Error("a config without {{.Port}} is seen to use it")
	}
}

func TestReloaded(t *testing.T) {
	old := map[int]string{10: "nginx: worker process"}
	for _, c := range []struct {
		now  map[int]string
		want bool
	}{
		{map[int]string{10: "nginx: worker process"}, false},
		{map[int]string{10: "nginx: worker process", 11: "nginx: worker process"}, false},
		{map[int]string{10: "nginx: worker process is shutting down"}, false},
		{map[int]string{10: "nginx: worker process is shutting down", 11: "nginx: worker process"}, true},
		{map[int]string{11: "nginx: worker process"}, true},
		{map[int]string{}, false},
	} {
		if got := reloaded(old, c.now); got != c.want {
			t.Errorf("reloaded(%v, %v) = %v, want %v", old, c.now, got, c.want)
		}
	}
}
