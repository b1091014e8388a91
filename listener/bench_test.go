package listener

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// benchListeners are the listeners each benchmark compares, in one run:
// net.Listen alone, then this package without and with its limits, then
// with four SO_REUSEPORT sockets (accept goroutines and a handoff).
var benchListeners = []struct {
	name string
	cfg  *Config // nil: plain net.Listen
}{
	{"plain", nil},
	{"listener", &Config{}},
	{"listener-limits", &Config{MaxConns: 1 << 20, MaxConnsPerIP: 1 << 20, Rate: 1e9, Burst: 1 << 20}},
	{"listener-reuseport4", &Config{ReusePort: 4}},
}

func benchListen(b *testing.B, cfg *Config) net.Listener {
	b.Helper()
	var ln net.Listener
	var err error
	if cfg == nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		c := *cfg
		c.Registerer = prometheus.NewRegistry()
		ln, err = Listen(b.Context(), "tcp", "127.0.0.1:0", c)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	return ln
}

// BenchmarkAccept is the cost of one connection through the accept path:
// dial, accept, close both ends. The dial and the kernel's handshake are in
// every variant, so the difference between them is the listener's.
func BenchmarkAccept(b *testing.B) {
	for _, bl := range benchListeners {
		b.Run(bl.name, func(b *testing.B) {
			ln := benchListen(b, bl.cfg)
			addr := ln.Addr().String()
			b.ReportAllocs()
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				s, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				_ = s.Close()
				// A reset leaves no TIME_WAIT, so the run does not use up
				// loopback's ephemeral ports.
				_ = c.(*net.TCPConn).SetLinger(0)
				_ = c.Close()
			}
		})
	}
}

// BenchmarkHTTPKeepAlive is the cost of one request through net/http over
// a kept-alive connection: the listener is on the accept path only, so it
// should add nothing.
func BenchmarkHTTPKeepAlive(b *testing.B) {
	for _, bl := range benchListeners {
		b.Run(bl.name, func(b *testing.B) {
			ln := benchListen(b, bl.cfg)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "ok")
			})}
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = srv.Serve(ln)
			}()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			cl := &http.Client{Transport: tr}
			url := "http://" + ln.Addr().String() + "/"
			get := func() {
				resp, err := cl.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			get() // the connection, outside the timing
			b.ReportAllocs()
			for b.Loop() {
				get()
			}
			b.StopTimer()
			tr.CloseIdleConnections()
			_ = srv.Close()
			<-done
		})
	}
}

// nopConn is a connection that costs nothing, so BenchmarkAdmit measures
// the listener's own work alone.
type nopConn struct{ net.Conn }

var nopRemote = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4242}

func (nopConn) RemoteAddr() net.Addr { return nopRemote }
func (nopConn) Close() error         { return nil }

// nopListener hands out nopConns forever.
type nopListener struct{}

func (nopListener) Accept() (net.Conn, error) { return nopConn{}, nil }
func (nopListener) Close() error              { return nil }
func (nopListener) Addr() net.Addr            { return nopRemote }

// BenchmarkAdmit is the listener's own cost per connection, without the
// kernel: admission, the wrapper, and the Close that frees the slot.
func BenchmarkAdmit(b *testing.B) {
	for _, bl := range benchListeners[1:3] {
		b.Run(bl.name, func(b *testing.B) {
			l, err := Wrap(nopListener{}, *bl.cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ReportAllocs()
			for b.Loop() {
				c, err := l.Accept()
				if err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
}
