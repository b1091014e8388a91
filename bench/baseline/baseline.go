// Package baseline is the plain net/http SSE broadcaster that every herald
// benchmark is compared with (see BENCHMARKS.md).
//
// It is deliberately the obvious design, the one most people write first,
// and must stay that way for the comparison to mean anything:
//
//   - one goroutine per connection (the HTTP handler itself),
//   - one buffered channel per subscriber, no history, no index,
//   - on publish, one loop over every subscriber under one mutex, matching
//     topics by exact string (a subscriber's "*" matches everything), encoding
//     the frame for each matching subscriber with fmt and sending it on that
//     subscriber's channel without blocking; a subscriber whose channel is
//     full is dropped,
//   - each handler writes and flushes one frame at a time, with its own
//     time.Ticker for heartbeats.
//
// Do not optimise it: a faster baseline is a different baseline.
//
// It speaks just enough of the Mercure protocol for `herald bench` to drive it
// like herald:
//
//   - GET /.well-known/mercure?topic=X&topic=Y (or match=X) opens an SSE
//     stream of `id:` (`event:`) `data:` frames. Last-Event-ID is ignored: there
//     is no history.
//   - POST /.well-known/mercure with the form fields topic (repeatable), data,
//     id and type publishes and answers 200 with the update's id in the body
//     (a fresh urn:uuid: when the publisher gave none).
//
// There is no authorization: an Authorization header or cookie is accepted
// and ignored, and `private` updates go to every matching subscriber.
package baseline

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Path is the Mercure endpoint the baseline serves.
const Path = "/.well-known/mercure"

const (
	// subscriberBuffer is how many frames a subscriber's channel holds before
	// the subscriber counts as too slow and is dropped.
	subscriberBuffer = 256
	// defaultHeartbeat is the interval of the comment line each connection
	// writes to keep proxies and clients from timing out.
	defaultHeartbeat = 15 * time.Second
	// maxPublishBody bounds a publish request's form.
	maxPublishBody = 1 << 20
)

// subscriber is one open stream.
type subscriber struct {
	topics []string // exact topics; "*" matches every update
	ch     chan []byte
}

func (s *subscriber) matches(topics []string) bool {
	for _, want := range s.topics {
		if want == "*" {
			return true
		}
		for _, t := range topics {
			if t == want {
				return true
			}
		}
	}
	return false
}

// Server is the baseline hub. It is an http.Handler serving Path; create it
// with New and end it with Close.
type Server struct {
	heartbeat time.Duration

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

// New returns a baseline hub with no subscribers.
func New() *Server {
	return &Server{heartbeat: defaultHeartbeat, subs: make(map[*subscriber]struct{})}
}

// Close ends every open stream and makes the server refuse new subscriptions
// with 503. The handlers return as soon as they notice (they do not wait for
// the client). Close is idempotent. It does not close listeners: that is the
// http.Server's job.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for sub := range s.subs {
		close(sub.ch)
		delete(s.subs, sub)
	}
}

// ServeHTTP serves Path: GET subscribes, POST publishes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.subscribe(w, r)
	case http.MethodPost:
		s.publish(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// subscribers reports how many streams are registered (for tests).
func (s *Server) subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// add registers sub; it reports false once the server is closed.
func (s *Server) add(sub *subscriber) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.subs[sub] = struct{}{}
	return true
}

// remove unregisters sub if it is still registered. Its channel is left
// open: only the side holding the mutex when it deletes closes it.
func (s *Server) remove(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
}

func (s *Server) subscribe(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	topics := append(q["topic"], q["match"]...)
	if len(topics) == 0 {
		http.Error(w, "missing topic parameter", http.StatusBadRequest)
		return
	}
	sub := &subscriber{topics: topics, ch: make(chan []byte, subscriberBuffer)}
	if !s.add(sub) {
		http.Error(w, "server closed", http.StatusServiceUnavailable)
		return
	}
	defer s.remove(sub)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil || r.Method == http.MethodHead {
		return
	}

	ticker := time.NewTicker(s.heartbeat)
	defer ticker.Stop()
	for {
		var frame []byte
		select {
		case f, ok := <-sub.ch:
			if !ok {
				return // dropped as too slow, or the server closed
			}
			frame = f
		case <-ticker.C:
			frame = []byte(":\n\n")
		case <-r.Context().Done():
			return
		}
		if _, err := w.Write(frame); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxPublishBody)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	topics := r.PostForm["topic"]
	if len(topics) == 0 {
		http.Error(w, "missing topic", http.StatusBadRequest)
		return
	}
	id := r.PostForm.Get("id")
	if id == "" {
		id = newID()
	}
	data, typ := r.PostForm.Get("data"), r.PostForm.Get("type")

	s.mu.Lock()
	for sub := range s.subs {
		if !sub.matches(topics) {
			continue
		}
		select {
		case sub.ch <- encode(id, typ, data):
		default:
			// Too slow: drop it. Its handler sees the closed channel and
			// returns; the client may reconnect (and has lost updates).
			close(sub.ch)
			delete(s.subs, sub)
		}
	}
	s.mu.Unlock()

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, id)
}

// encode builds one SSE frame with fmt, once per subscriber, on purpose.
func encode(id, typ, data string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "id: %s\n", id)
	if typ != "" {
		fmt.Fprintf(&b, "event: %s\n", typ)
	}
	for _, line := range strings.Split(data, "\n") {
		fmt.Fprintf(&b, "data: %s\n", strings.TrimSuffix(line, "\r"))
	}
	b.WriteString("\n")
	return b.Bytes()
}

// newID returns a random (version 4) urn:uuid: id.
func newID() string {
	var u [16]byte
	rand.Read(u[:]) // never fails (crypto/rand panics instead)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// ListenAndServe runs a baseline hub on addr until ctx ends, then closes
// every stream, shuts the HTTP server down and returns nil. It returns an
// error only when it cannot listen or serve.
func ListenAndServe(ctx context.Context, addr string) error {
	ln, err := listen(ctx, addr)
	if err != nil {
		return err
	}
	return serve(ctx, ln)
}

func listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return ln, nil
}

// serve serves the hub on ln until ctx ends; it closes ln.
func serve(ctx context.Context, ln net.Listener) error {
	hub := New()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge, like herald
	srv := &http.Server{
		Handler:           hub,
		ReadHeaderTimeout: 10 * time.Second,
		Protocols:         &protocols,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		hub.Close()
		return fmt.Errorf("baseline: %w", err)
	case <-ctx.Done():
	}
	hub.Close()
	// The stream handlers have been told to end; give in-flight publishes a
	// moment, then cut whatever is left.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("baseline: %w", err)
	}
	return nil
}

// ServeCommand is `herald bench serve-baseline [--addr ADDR]`: it runs the
// baseline hub until ctx ends and prints "baseline listening on ADDR" to
// stdout once it accepts connections (ADDR is the bound address, so
// --addr 127.0.0.1:0 works).
func ServeCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve-baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: herald bench serve-baseline [--addr ADDR]\n\n"+
			"Runs the plain net/http SSE broadcaster herald's benchmarks compare with.\n\n")
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "127.0.0.1:8081", "address to listen on (host:port; port 0 picks a free one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("serve-baseline: unexpected argument %q", fs.Arg(0))
	}
	ln, err := listen(ctx, *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "baseline listening on %s\n", ln.Addr())
	return serve(ctx, ln)
}
