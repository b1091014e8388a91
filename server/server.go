// Package server wires a herald process together: listeners, the
// http.Server for HTTP/1.1 and HTTP/2 (TLS with h2, or cleartext h2c when
// asked), the admin endpoints (health, readiness, metrics, pprof) and a
// graceful shutdown that ends every stream so clients resume elsewhere or
// later, while in-flight publishes finish.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-hub/herald/ctxguard"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/stream"
)

// Config configures a Server. Zero values mean the defaults.
type Config struct {
	// Addr is the main listen address. Default "localhost:3000".
	Addr string
	// Listener, when set, is used instead of listening on Addr.
	Listener net.Listener
	// AdminAddr, when set, serves pprof, metrics and health on a second
	// listener that should not be exposed publicly; /metrics then leaves
	// the main listener.
	AdminAddr string
	// TLSCert and TLSKey enable HTTPS with HTTP/2.
	TLSCert, TLSKey string
	// H2C enables cleartext HTTP/2 (prior knowledge) beside HTTP/1.1.
	H2C bool
	// Handler serves the Mercure endpoints. Required.
	Handler http.Handler
	// Hub is ended on shutdown. Required.
	Hub *hub.Hub
	// Streams tracks the handler's event streams (mercure.Config.Streams).
	// Shutdown closes its gate, ends the hub's streams and waits for every
	// tracked one, including those whose connections the handler took
	// from net/http, within ShutdownTimeout; then it closes what is left.
	// Nil means the handler serves no streams outside net/http, and none
	// is waited for beyond what http.Server.Shutdown waits for.
	Streams *stream.Tracker
	// Drained, when set, is called at shutdown once every stream has
	// ended and every request has returned, before the hub closes: the
	// last moment to publish (the handler announces the end of the
	// subscriptions it still holds, mercure.Handler.Close).
	Drained func(context.Context)
	// Registry collects metrics for /metrics; nil means a new registry.
	Registry *prometheus.Registry
	// Logger receives server logs; nil discards them.
	Logger *slog.Logger
	// ShutdownTimeout bounds how long in-flight publishes may take to
	// finish, and streams to close, once shutdown starts. Default 10s.
	ShutdownTimeout time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers. Default 10s.
	ReadHeaderTimeout time.Duration
}

// Server is a running herald HTTP server.
type Server struct {
	cfg   Config
	http  *http.Server
	admin *http.Server
	ln    net.Listener
	aln   net.Listener
	log   *slog.Logger
	conns prometheus.Gauge
	guard *ctxguard.Guard
}

// New listens on the configured addresses and prepares the servers. Call
// Serve to start serving.
func New(cfg Config) (*Server, error) {
	if cfg.Handler == nil || cfg.Hub == nil {
		return nil, errors.New("server: Handler and Hub are required")
	}
	if cfg.Addr == "" {
		cfg.Addr = "localhost:3000"
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.conns = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_connections", Help: "Open client connections.",
	})
	if err := cfg.Registry.Register(s.conns); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}

	mux := http.NewServeMux()
	s.health(mux)
	if cfg.AdminAddr == "" {
		// Without a private listener, metrics are served beside the hub;
		// with one, only there.
		mux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	}
	mux.Handle("/", cfg.Handler)

	// Every request's context is cancelled, with a cause, when its handler
	// returns; a goroutine a handler starts with ctxguard.Go is counted
	// under its route and reported if it outlives the request. (Streams
	// that leave net/http are the stream.Tracker's, not the guard's.)
	s.guard = ctxguard.New(ctxguard.Options{
		Registerer: cfg.Registry,
		Logger:     cfg.Logger,
		Root:       route,
	})
	s.http = &http.Server{
		Handler:           s.guard.Handler(front(mux, cfg.Handler)),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnState:         s.connState,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		HTTP2: &http.HTTP2Config{
			// Each subscription is a stream that stays open: allow many
			// per connection so browsers multiplex instead of opening
			// new connections.
			MaxConcurrentStreams: 1000,
			// Subscribers send almost nothing; keep per-stream receive
			// buffers small so idle streams cost little.
			MaxReceiveBufferPerStream:     64 << 10,
			MaxReceiveBufferPerConnection: 1 << 20,
			// Detect dead peers on idle connections.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(cfg.TLSCert != "")
	protos.SetUnencryptedHTTP2(cfg.H2C)
	s.http.Protocols = &protos

	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		s.http.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2", "http/1.1"},
		}
	}
	s.ln = ln

	if cfg.AdminAddr != "" {
		amux := http.NewServeMux()
		s.health(amux)
		amux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
		amux.HandleFunc("/debug/pprof/", pprof.Index)
		amux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		amux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		amux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		amux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.admin = &http.Server{Handler: amux, ReadHeaderTimeout: cfg.ReadHeaderTimeout}
		aln, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen admin: %w", err)
		}
		s.aln = aln
	}
	return s, nil
}

func (s *Server) health(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		switch err := s.cfg.Hub.Ready(); {
		case errors.Is(err, hub.ErrShutdown):
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
		case err != nil:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "history unavailable: %v\n", err)
		default:
			_, _ = w.Write([]byte("ready\n"))
		}
	})
}

func (s *Server) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.conns.Inc()
	case http.StateClosed:
		s.conns.Dec()
	}
}

// HijackedClosed accounts for a connection the handler took from net/http
// (StateHijacked) and has now closed: give it to mercure.Config.
func (s *Server) HijackedClosed() { s.conns.Dec() }

// Addr returns the main listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// AdminAddr returns the admin listener's address, or nil.
func (s *Server) AdminAddr() net.Addr {
	if s.aln == nil {
		return nil
	}
	return s.aln.Addr()
}

// Serve serves until ctx ends, then shuts down gracefully: it stops
// accepting, ends every stream (clients reconnect and resume), lets
// in-flight publishes finish within ShutdownTimeout, and closes the hub.
// It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		if s.http.TLSConfig != nil {
			err = s.http.ServeTLS(s.ln, "", "")
		} else {
			err = s.http.Serve(s.ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	if s.admin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.admin.Serve(s.aln); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	memCtx, stopMem := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.releaseMemory(memCtx, 5*time.Second)
	}()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	stopMem()
	err := s.shutdown(ctx)
	wg.Wait()
	if serveErr != nil {
		return serveErr
	}
	return err
}

func (s *Server) shutdown(parent context.Context) error {
	// The grace period must outlive the parent, which has ended already.
	ctx, cancel := context.WithTimeoutCause(context.WithoutCancel(parent), s.cfg.ShutdownTimeout,
		errors.New("shutdown grace period over"))
	defer cancel()
	s.log.Info("shutting down", "grace", s.cfg.ShutdownTimeout)
	done := make(chan error, 1)
	go func() { done <- s.http.Shutdown(ctx) }()
	// http.Server.Shutdown waits for handlers, and SSE handlers never end
	// by themselves: end them, so only publishes remain to wait for. The
	// tracker closes its gate first, so no stream starts after the hub's
	// were ended, and it waits for the streams net/http no longer knows.
	var err error
	if s.cfg.Streams != nil {
		err = s.cfg.Streams.Shutdown(ctx, s.cfg.Hub.EndStreams)
	} else {
		s.cfg.Hub.EndStreams()
	}
	if herr := <-done; err == nil {
		err = herr
	}
	if err != nil {
		err = fmt.Errorf("shutdown: %w", context.Cause(ctx))
		_ = s.http.Close()
	}
	if s.cfg.Streams != nil {
		// Everything left has been closed: what remains ends at once, and
		// nothing the server started outlives Serve.
		s.cfg.Streams.Wait()
	}
	if gerr := s.guard.Wait(ctx); gerr != nil && err == nil {
		err = fmt.Errorf("shutdown: goroutines of requests still running: %w", gerr)
	}
	s.guard.Close()
	if s.cfg.Drained != nil {
		s.cfg.Drained(ctx)
	}
	if s.admin != nil {
		_ = s.admin.Shutdown(ctx)
	}
	s.cfg.Hub.Close()
	return err
}

// route names a request's root for the guard's metrics: a bounded set.
func route(r *http.Request) string {
	switch r.Method {
	case http.MethodGet, "QUERY":
		return "subscribe"
	case http.MethodPost:
		return "publish"
	}
	return "other"
}

// front sends every request with a clean path, but the few the mux routes,
// straight to the Mercure handler, which checks the path itself:
// publishes and subscriptions skip the mux's pattern matching, about 2% of
// the CPU of a durable publish. Paths the mux would redirect to their
// clean form (double slashes, dot segments) and CONNECT requests still go
// through it.
func front(mux *http.ServeMux, mercure http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/healthz" || p == "/readyz" || p == "/metrics" || r.Method == http.MethodConnect || !cleanPath(p):
			mux.ServeHTTP(w, r)
		default:
			mercure.ServeHTTP(w, r)
		}
	})
}

// cleanPath reports whether p is absolute and has no empty, "." or ".."
// segment: what ServeMux serves without redirecting.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return !strings.Contains(p, "//")
}
