package mercure_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
	"github.com/herald-hub/herald/server"
	"github.com/herald-hub/herald/sse"
)

// TestShutdownRace holds a subscribe request at a random stage between
// the tracker counting it and its stream running on its own (just
// admitted, subscribed to the hub, its connection just taken from
// net/http), starts a shutdown, and lets the request go on after a random
// delay, with or without waiting for the hub to end its streams first.
// Whatever the timing, the shutdown waits for the request (Serve returns
// only after it was let go, and after its stream's connection is closed),
// the request's stream is ended with a retry hint, and Serve returns nil.
// goleak (TestMain) then checks that nothing was left running.
func TestShutdownRace(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	for _, h2 := range []bool{false, true} {
		stages := []string{"admitted", "subscribed", "hijacked"}
		if h2 {
			stages = stages[:2] // HTTP/2 streams stay inside net/http
		}
		for i := range 40 {
			stage := stages[rng.IntN(len(stages))]
			waitDrain := rng.IntN(2) == 0
			delay := time.Duration(rng.Int64N(int64(20 * time.Millisecond)))
			name := fmt.Sprintf("h2=%v/%d/%s/drain=%v/%v", h2, i, stage, waitDrain, delay)
			t.Run(name, func(t *testing.T) { shutdownRace(t, h2, stage, waitDrain, delay) })
		}
	}
}

func shutdownRace(t *testing.T, h2 bool, stage string, waitDrain bool, delay time.Duration) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hubURL := "http://" + ln.Addr().String() + mercure.DefaultPath
	public, _ := url.Parse(hubURL)
	eng := memory.New(memory.Options{})
	defer eng.Close()
	h, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := mercure.ParseKey(subSecret, nil)
	v, err := mercure.NewValidator(mercure.TokenConfig{PublisherKey: key, SubscriberKey: key, Issuer: "herald", Audience: hubURL, Draft7: true, Draft8: true, Base: hubURL})
	if err != nil {
		t.Fatal(err)
	}
	var closedConns atomic.Int64
	handler, err := mercure.New(mercure.Config{
		Hub: h, Tokens: v, PublicURL: public, Draft7: true, Draft8: true, Anonymous: true,
		HijackedClosed: func() { closedConns.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var released atomic.Bool
	mercure.SetStageHook(handler, func(s string) {
		if s == stage {
			close(held)
			<-release
		}
	})
	srv, err := server.New(server.Config{Listener: ln, H2C: h2, Handler: handler, Hub: h, Streams: handler.Streams(), ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type served struct {
		err           error
		afterRelease  bool
		closedStreams int64
	}
	done := make(chan served, 1)
	go func() {
		err := srv.Serve(ctx)
		done <- served{err, released.Load(), closedConns.Load()}
	}()

	tr := &http.Transport{}
	var protos http.Protocols
	protos.SetHTTP1(!h2)
	protos.SetUnencryptedHTTP2(h2)
	tr.Protocols = &protos
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	type answer struct {
		status int
		proto  int
		body   []byte
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := client.Get(hubURL + "?" + q("match", "a"))
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, resp.ProtoMajor, body, err}
	}()

	<-held
	cancel() // the shutdown starts with the request held
	if waitDrain {
		for !h.Draining() {
			time.Sleep(100 * time.Microsecond)
		}
	}
	time.Sleep(delay) // room for a shutdown that does not wait to end
	released.Store(true)
	close(release)

	var s served
	select {
	case s = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	if s.err != nil {
		t.Fatalf("Serve: %v", s.err)
	}
	if !s.afterRelease {
		t.Fatal("Serve returned while a counted subscribe request was held: the shutdown did not wait for it")
	}
	if stage == "hijacked" && s.closedStreams != 1 {
		t.Fatalf("Serve returned with the taken-over stream still open (%d closed)", s.closedStreams)
	}
	a := <-answered
	if a.err != nil {
		t.Fatalf("client: %v", a.err)
	}
	if want := map[bool]int{false: 1, true: 2}[h2]; a.proto != want {
		t.Fatalf("served HTTP/%d, want HTTP/%d", a.proto, want)
	}
	if a.status != 200 {
		t.Fatalf("status %d", a.status)
	}
	// Refused (still in the hub's hands when its streams ended) or ended
	// with the closing words: either way told when to come back.
	if stage != "admitted" && !bytes.Contains(a.body, []byte(": closed: hub shutting down\n")) {
		t.Fatalf("stream ended without saying why: %q", a.body)
	}
	rd := sse.NewReader(bytes.NewReader(a.body))
	for {
		if _, err := rd.Next(); err != nil {
			break
		}
	}
	if ms, err := strconv.Atoi(rd.Retry()); err != nil || ms < 1000 || ms > 5000 {
		t.Fatalf("retry %q, want 1000-5000 ms, in %q", rd.Retry(), a.body)
	}
	if h.Subscribers() != 0 {
		t.Fatalf("%d subscribers left", h.Subscribers())
	}
}
