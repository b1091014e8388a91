package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
)

// workerEnv, set in a re-executed test binary's environment, makes it a
// bench worker instead of a test run.
const workerEnv = "HERALD_BENCH_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := Worker(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const testSecret = "bench-test-secret-bench-test-secret-0123"

// mode is how a test reaches the hub.
type mode struct {
	name   string
	http2  bool
	draft7 bool
}

var (
	h1     = mode{name: "h1"}
	h2     = mode{name: "h2", http2: true}
	legacy = mode{name: "h1-draft7", draft7: true}
)

// seen records how the hub was reached.
type seen struct {
	mu       sync.Mutex
	protos   map[int]int         // requests by HTTP major version
	pubConns map[string]struct{} // remote addresses of publishes
	sources  map[string]struct{} // source IPs
	gets     int                 // subscription requests (GETs of the hub path)
	posts    int                 // publish requests
	patterns map[int]int         // subscription requests by their number of URL patterns
}

func (s *seen) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := strings.Cut(r.RemoteAddr, ":")
		s.mu.Lock()
		s.protos[r.ProtoMajor]++
		s.sources[host] = struct{}{}
		if r.Method == http.MethodPost {
			s.pubConns[r.RemoteAddr] = struct{}{}
			s.posts++
		}
		if r.Method == http.MethodGet && r.URL.Path == mercure.DefaultPath { // not /metrics
			s.gets++
			if s.patterns == nil {
				s.patterns = make(map[int]int)
			}
			s.patterns[len(r.URL.Query()["match_urlpattern"])]++
		}
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// newHerald starts an in-process herald (memory engine, anonymous
// subscribers) on a loopback listener and returns a Config aimed at it,
// with a publisher token, and what it sees of its clients.
func newHerald(t *testing.T, m mode) (Config, *seen) {
	t.Helper()
	eng := memory.New(memory.Options{})
	t.Cleanup(func() { _ = eng.Close() })
	return serveHerald(t, m, eng, "")
}

// serveHerald starts an in-process herald on eng, as newHerald does.
// Tokens must name audience; "" means the hub's own URL.
func serveHerald(t *testing.T, m mode, eng hub.Engine, audience string) (Config, *seen) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	scheme := "http"
	if m.http2 {
		scheme = "https"
	}
	hubURL := fmt.Sprintf("%s://%s%s", scheme, srv.Listener.Addr(), mercure.DefaultPath)
	if audience == "" {
		audience = hubURL
	}
	public, _ := url.Parse(audience)
	h, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
	if err != nil {
		t.Fatal(err)
	}
	key, err := mercure.ParseKey(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := mercure.NewValidator(mercure.TokenConfig{
		PublisherKey: key, SubscriberKey: key, Issuer: "herald", Audience: audience,
		Draft7: true, Draft8: true, Base: audience,
	})
	if err != nil {
		t.Fatal(err)
	}
	handler, err := mercure.New(mercure.Config{Hub: h, Tokens: v, PublicURL: public, Draft7: true, Draft8: true, Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	sn := &seen{protos: map[int]int{}, pubConns: map[string]struct{}{}, sources: map[string]struct{}{}}
	srv.Config.Handler = sn.wrap(handler)
	if m.http2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		h.EndStreams()
		srv.Close()
		h.Close()
	})
	tok, err := mercure.Mint(mercure.MintOptions{Key: key, Publish: []string{"*"}, TTL: time.Hour, Issuer: "herald", Audience: audience, Legacy: m.draft7})
	if err != nil {
		t.Fatal(err)
	}
	return Config{Hub: hubURL, PublisherToken: tok, HTTP2: m.http2, Insecure: m.http2, Draft7: m.draft7}, sn
}

// run runs a scenario and returns its result and its JSON output, parsed.
func run(t *testing.T, scenario string, cfg Config) (*Result, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cfg.JSON = true
	var out bytes.Buffer
	r, err := Run(ctx, scenario, cfg, &out)
	if err != nil {
		t.Fatalf("%s: %v\n%s", scenario, err, out.Bytes())
	}
	var obj map[string]any
	if err := json.Unmarshal(out.Bytes(), &obj); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out.Bytes())
	}
	return r, obj
}

func TestFanoutHerald(t *testing.T) {
	for _, m := range []mode{h1, h2, legacy} {
		t.Run(m.name, func(t *testing.T) {
			cfg, sn := newHerald(t, m)
			cfg.Subscribers, cfg.Topics, cfg.Publishers = 51, 3, 2
			cfg.Rate, cfg.Payload = 200, 120
			cfg.Duration, cfg.Drain = time.Second, 5*time.Second
			r, obj := run(t, "fanout", cfg)

			if r.Published == 0 || r.PublishErrors != 0 {
				t.Fatalf("published %d, %d errors: %v", r.Published, r.PublishErrors, r.Notes)
			}
			// 17 subscribers per topic: each publish reaches the 17 of its topic.
			if want := r.Published * 17; r.Expected != want || r.Delivered != want {
				t.Errorf("expected %d, delivered %d; want %d both", r.Expected, r.Delivered, want)
			}
			if r.Lost != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 || r.Unparsed != 0 {
				t.Errorf("lost %d, duplicates %d, out of order %d, unparsed %d", r.Lost, r.Duplicates, r.OutOfOrder, r.Unparsed)
			}
			if r.Latency.P50 <= 0 || r.Latency.Max < r.Latency.P99 || r.DeliveriesPerS <= 0 {
				t.Errorf("latency %+v, deliveries/s %g", r.Latency, r.DeliveriesPerS)
			}
			if r.PayloadBytes != 120 || r.Subscribers != 51 || len(r.Distribution) == 0 {
				t.Errorf("payload %d, subscribers %d, distribution %d points", r.PayloadBytes, r.Subscribers, len(r.Distribution))
			}
			for _, k := range []string{"scenario", "subscribers", "latency_ms", "deliveries_per_s", "publishes_per_s", "lost", "duplicates", "out_of_order", "server_rss_per_conn_kb"} {
				if _, ok := obj[k]; !ok {
					t.Errorf("JSON lacks %q", k)
				}
			}
			lat, _ := obj["latency_ms"].(map[string]any)
			for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
				if _, ok := lat[k]; !ok {
					t.Errorf("latency_ms lacks %q", k)
				}
			}
			sn.mu.Lock()
			defer sn.mu.Unlock()
			major := 1
			if m.http2 {
				major = 2
			}
			if len(sn.protos) != 1 || sn.protos[major] == 0 {
				t.Errorf("requests by HTTP version %v, want all %d", sn.protos, major)
			}
			// Subscribers come from 127.0.0.2 to 127.0.0.9 (publishers may
			// come from 127.0.0.1 too).
			spread := 0
			for i := 2; i <= 9; i++ {
				if _, ok := sn.sources[fmt.Sprintf("127.0.0.%d", i)]; ok {
					spread++
				}
			}
			if !m.http2 && (spread != 8 || len(sn.sources) > 9) {
				t.Errorf("connections from %v, want 127.0.0.2 to 127.0.0.9 (and 127.0.0.1)", slices.Sorted(maps.Keys(sn.sources)))
			}
		})
	}
}

func TestPublishHerald(t *testing.T) {
	cfg, sn := newHerald(t, h1)
	cfg.Publishers, cfg.Duration = 4, 500*time.Millisecond
	r, _ := run(t, "publish", cfg)
	sn.mu.Lock()
	// Without keep-alive every publish would dial (hundreds here). With
	// it, a loaded machine may still see an extra dial or two: net/http
	// dials when a request starts before the previous one has returned
	// its connection to the pool, and keeps the winner.
	if n := len(sn.pubConns); n > 8 {
		t.Errorf("%d publish connections for 4 publishers: keep-alive not kept", n)
	}
	sn.mu.Unlock()
	if r.Published == 0 || r.PublishErrors != 0 || r.PublishesPerS <= 0 {
		t.Fatalf("published %d (%g/s), %d errors: %v", r.Published, r.PublishesPerS, r.PublishErrors, r.Notes)
	}
	if r.Latency.P50 <= 0 || r.PublishLatency == nil || *r.PublishLatency != r.Latency {
		t.Errorf("latency %+v, publish latency %+v", r.Latency, r.PublishLatency)
	}
}

// TestPublishAttached: --attached subscribers are open while publishing,
// on a topic of their own, and are reported.
func TestPublishAttached(t *testing.T) {
	cfg, sn := newHerald(t, h1)
	cfg.Publishers, cfg.Duration, cfg.Attached = 2, 500*time.Millisecond, 20
	r, _ := run(t, "publish", cfg)
	if r.Published == 0 || r.PublishErrors != 0 {
		t.Fatalf("published %d, %d errors: %v", r.Published, r.PublishErrors, r.Notes)
	}
	if r.Subscribers != 20 || r.Delivered != 0 {
		t.Errorf("subscribers %d, delivered %d: want 20 attached that receive nothing", r.Subscribers, r.Delivered)
	}
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.gets != 20 {
		t.Errorf("hub saw %d subscription requests, want 20", sn.gets)
	}
}

func TestResumeHerald(t *testing.T) {
	cfg, _ := newHerald(t, h1)
	cfg.History, cfg.Publishers = 300, 4
	cfg.Duration, cfg.Drain = 10*time.Second, 2*time.Second
	r, _ := run(t, "resume", cfg)
	if r.Published != 300 {
		t.Fatalf("published %d of 300: %v", r.Published, r.Notes)
	}
	want := map[string]int64{"early": 299, "late": 3, "unknown": 0}
	if len(r.Resume) != 3 {
		t.Fatalf("resume cases %+v", r.Resume)
	}
	for _, c := range r.Resume {
		if !c.OK || c.Received != want[c.Name] || c.Expected != want[c.Name] {
			t.Errorf("%s: %+v", c.Name, c)
		}
		if c.Name == "unknown" && c.ResumedFrom != "earliest" {
			t.Errorf("unknown id answered %q", c.ResumedFrom)
		}
		if c.Name != "unknown" && (c.FirstEventMs <= 0 || c.ResumedFrom != c.From) {
			t.Errorf("%s: first event %g ms, resumed from %q, asked %q", c.Name, c.FirstEventMs, c.ResumedFrom, c.From)
		}
	}
	if r.Lost != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 {
		t.Errorf("lost %d, duplicates %d, out of order %d", r.Lost, r.Duplicates, r.OutOfOrder)
	}
}

func TestFindMax(t *testing.T) {
	cfg, _ := newHerald(t, h1)
	cfg.FindMax = true
	cfg.Subscribers, cfg.Rate, cfg.MaxSteps = 10, 40, 2
	cfg.Duration, cfg.Drain = 400*time.Millisecond, 2*time.Second
	cfg.P99Bound = 2 * time.Second // a verdict on counting, not on this machine's speed
	cfg.Report = filepath.Join(t.TempDir(), "report.html")
	r, _ := run(t, "fanout", cfg)
	if len(r.Steps) != 2 || !r.Steps[0].OK || !r.Steps[1].OK {
		t.Fatalf("steps %+v", r.Steps)
	}
	if r.Steps[1].Rate != 60 || r.MaxRate != 60 {
		t.Errorf("rates %g, %g, max %g; want 40, 60, 60", r.Steps[0].Rate, r.Steps[1].Rate, r.MaxRate)
	}
	page, err := os.ReadFile(cfg.Report)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "Find-max", "by percentile", "<polyline"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("report lacks %q", want)
		}
	}
	if bytes.Contains(page, []byte("<script")) || bytes.Contains(page, []byte("src=")) {
		t.Error("report loads something")
	}
}

// TestFanoutWorkers forces two worker processes (this test binary,
// re-executed) and checks that their counts and histograms merge.
func TestFanoutWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	cfg, _ := newHerald(t, h1)
	cfg.Workers = 2
	cfg.WorkerCommand = []string{os.Args[0]}
	cfg.WorkerEnv = []string{workerEnv + "=1"}
	cfg.Subscribers, cfg.Rate, cfg.Duration, cfg.Drain = 41, 100, 700*time.Millisecond, 5*time.Second
	r, _ := run(t, "fanout", cfg)
	if r.Workers != 2 {
		t.Errorf("workers %d, want 2", r.Workers)
	}
	if r.Published == 0 || r.Expected != r.Published*41 || r.Delivered != r.Expected {
		t.Errorf("published %d, expected %d, delivered %d", r.Published, r.Expected, r.Delivered)
	}
	if r.Lost != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 {
		t.Errorf("lost %d, duplicates %d, out of order %d", r.Lost, r.Duplicates, r.OutOfOrder)
	}
	if r.Latency.P50 <= 0 || len(r.Distribution) == 0 {
		t.Errorf("latency %+v from the merged histograms", r.Latency)
	}
}

func TestRefusesRemote(t *testing.T) {
	_, err := Run(t.Context(), "fanout", Config{Hub: "http://192.0.2.1/.well-known/mercure"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("err %v", err)
	}
	// A name is refused without being resolved.
	_, err = Run(t.Context(), "fanout", Config{Hub: "http://hub.example/.well-known/mercure"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "is a name") {
		t.Fatalf("err %v", err)
	}
	if _, err := Run(t.Context(), "nope", Config{Hub: "http://127.0.0.1:1/"}, &bytes.Buffer{}); err == nil {
		t.Fatal("unknown scenario accepted")
	}
}

// TestCancel ends a run from outside mid-way: it must return promptly,
// say so, and leave nothing running (goleak checks at the end).
func TestCancel(t *testing.T) {
	cfg, _ := newHerald(t, h1)
	cfg.Subscribers, cfg.Rate, cfg.Duration = 20, 50, time.Minute
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(800*time.Millisecond, cancel)
	start := time.Now()
	var out bytes.Buffer
	r, err := Run(ctx, "fanout", cfg, &out)
	if err == nil {
		t.Fatal("no error after cancel")
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("took %s to stop", time.Since(start))
	}
	if r != nil && !r.Interrupted {
		t.Error("result not marked interrupted")
	}
}

// fakeHub is a deliberately faulty Mercure hub: of each stream's updates
// (as numbered in their payload) it drops #3, sends #5 twice and sends #8
// before #7, to live subscribers; replays (resume from a known id) suffer
// the same faults, counted by position in the replay instead. It keeps a
// history for Last-Event-ID and answers "earliest" to unknown ids.
type fakeHub struct {
	live, replays bool // which deliveries suffer the faults

	mu      sync.Mutex
	history []fakeEvent
	subs    map[*fakeSub]struct{}
	held    map[Stream]fakeEvent
}

type fakeEvent struct{ id, topic, data string }

type fakeSub struct {
	topics map[string]bool
	ch     chan fakeEvent
}

func newFakeHub(t *testing.T, live, replays bool) Config {
	f := &fakeHub{live: live, replays: replays, subs: map[*fakeSub]struct{}{}, held: map[Stream]fakeEvent{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return Config{Hub: srv.URL + "/.well-known/mercure"}
}

// faulty applies the faults to a sequence: what to send for the n-th
// item ev, given the item held back, if any.
func faulty(n uint64, ev fakeEvent, held *fakeEvent) []fakeEvent {
	switch n {
	case 3:
		return nil
	case 5:
		return []fakeEvent{ev, ev}
	case 7:
		*held = ev
		return nil
	case 8:
		return []fakeEvent{ev, *held}
	}
	return []fakeEvent{ev}
}

func (f *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		ev := fakeEvent{id: fmt.Sprintf("id-%d", len(f.history)+1), topic: r.PostForm.Get("topic"), data: r.PostForm.Get("data")}
		f.history = append(f.history, ev)
		send := []fakeEvent{ev}
		if st, seq, _, ok := parsePayload(ev.data); ok && f.live {
			held := f.held[st]
			send = faulty(seq, ev, &held)
			f.held[st] = held
		}
		for s := range f.subs {
			if s.topics[ev.topic] {
				for _, e := range send {
					s.ch <- e
				}
			}
		}
		f.mu.Unlock()
		fmt.Fprint(w, ev.id)
	case http.MethodGet:
		q := r.URL.Query()
		s := &fakeSub{topics: map[string]bool{}, ch: make(chan fakeEvent, 4096)}
		for _, t := range append(q["match"], q["topic"]...) {
			s.topics[t] = true
		}
		last := r.Header.Get("Last-Event-ID")
		f.mu.Lock()
		var replay []fakeEvent
		if last != "" {
			w.Header().Set("Mercure-Last-Event-ID", "earliest")
			for i, ev := range f.history {
				if ev.id == last {
					w.Header().Set("Mercure-Last-Event-ID", last)
					var held fakeEvent
					n := uint64(0)
					for _, e := range f.history[i+1:] {
						if s.topics[e.topic] {
							n++
							if f.replays {
								replay = append(replay, faulty(n, e, &held)...)
							} else {
								replay = append(replay, e)
							}
						}
					}
					break
				}
			}
		}
		f.subs[s] = struct{}{}
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			delete(f.subs, s)
			f.mu.Unlock()
		}()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		write := func(e fakeEvent) bool {
			_, err := fmt.Fprintf(w, "id: %s\ndata: %s\n\n", e.id, e.data)
			return err == nil
		}
		for _, e := range replay {
			if !write(e) {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case e := <-s.ch:
				if !write(e) || rc.Flush() != nil {
					return
				}
			}
		}
	default:
		http.Error(w, "no", http.StatusMethodNotAllowed)
	}
}

// TestFanoutFaultyHub checks that the tool reports exactly the faults the
// fake hub commits: per subscriber and stream one lost (#3), one duplicate
// (#5) and one out of order (#7 after #8). Two publishers make two streams
// on the one topic, each numbered on its own.
func TestFanoutFaultyHub(t *testing.T) {
	for _, publishers := range []int{1, 2} {
		t.Run(fmt.Sprintf("publishers=%d", publishers), func(t *testing.T) {
			cfg := newFakeHub(t, true, false)
			cfg.Subscribers, cfg.Publishers = 5, publishers
			cfg.Rate, cfg.Duration, cfg.Drain = 100, 400*time.Millisecond, 500*time.Millisecond
			r, _ := run(t, "fanout", cfg)
			if r.Published < int64(10*publishers) {
				t.Fatalf("published %d: too few to show the faults", r.Published)
			}
			want := int64(5 * publishers)
			if r.Lost != want || r.Duplicates != want || r.OutOfOrder != want {
				t.Errorf("lost %d, duplicates %d, out of order %d; want %d each", r.Lost, r.Duplicates, r.OutOfOrder, want)
			}
			// One dropped, one extra: as many deliveries as expected.
			if r.Expected != r.Published*5 || r.Delivered != r.Expected {
				t.Errorf("expected %d, delivered %d, published %d", r.Expected, r.Delivered, r.Published)
			}
		})
	}
}

// TestResumeFaultyHub checks the resume verification against replays that
// drop, duplicate and reorder: only the early resume is long enough to
// suffer them.
func TestResumeFaultyHub(t *testing.T) {
	cfg := newFakeHub(t, false, true)
	cfg.History, cfg.Publishers, cfg.Duration, cfg.Drain = 20, 1, 5*time.Second, 500*time.Millisecond
	r, _ := run(t, "resume", cfg)
	if len(r.Resume) != 3 {
		t.Fatalf("cases %+v", r.Resume)
	}
	early, late, unknown := r.Resume[0], r.Resume[1], r.Resume[2]
	if early.OK || early.Lost != 1 || early.Duplicates != 1 || early.OutOfOrder != 1 || early.Expected != 19 || early.Received != 19 || early.Unexpected != 0 {
		t.Errorf("early: %+v", early)
	}
	if !late.OK || late.Expected != 1 || late.Received != 1 {
		t.Errorf("late: %+v", late)
	}
	if !unknown.OK || unknown.ResumedFrom != "earliest" || unknown.Received != 0 {
		t.Errorf("unknown: %+v", unknown)
	}
	if r.Lost != 1 || r.Duplicates != 1 || r.OutOfOrder != 1 {
		t.Errorf("totals lost %d, duplicates %d, out of order %d", r.Lost, r.Duplicates, r.OutOfOrder)
	}
}

func TestTracker(t *testing.T) {
	var tr tracker
	var got []verdict
	for _, s := range []uint64{1, 2, 4, 3, 3, 6, 0, 1 << 40} {
		got = append(got, tr.see(s))
	}
	want := []verdict{inOrder, inOrder, inOrder, outOfOrder, duplicate, inOrder, implausible, implausible}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verdicts %v, want %v", got, want)
	}
	// Missing: 5; published up to 8, of which 8 failed: lost 5 and 7.
	if n := tr.lost(8, map[uint64]bool{8: true}); n != 2 {
		t.Errorf("lost %d, want 2", n)
	}
}

func TestPayload(t *testing.T) {
	b := appendPayload(nil, Stream{Topic: 3, Publisher: 7}, 42, 1_700_000_000_123_456_789, 100)
	if len(b) != 100 {
		t.Errorf("payload %d bytes, want 100", len(b))
	}
	st, seq, ts, ok := parsePayload(string(b))
	if !ok || st != (Stream{3, 7}) || seq != 42 || ts != 1_700_000_000_123_456_789 {
		t.Errorf("parsed %v %d %d %v", st, seq, ts, ok)
	}
	for _, bad := range []string{"", "hb1 k=1 p=2 s=3", "hb1 k=x p=2 s=3 t=4 .", "hello", "hb1 k=1 p=2 s=99999999999999999999999 t=4 ."} {
		if _, _, _, ok := parsePayload(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestHistogramEncoding(t *testing.T) {
	r := newRecorder()
	for i := range 1000 {
		r.record(i, time.Duration(i+1)*time.Millisecond)
	}
	s, err := encodeHist(r.merged())
	if err != nil {
		t.Fatal(err)
	}
	h, err := decodeHist(s)
	if err != nil {
		t.Fatal(err)
	}
	p := percentiles(h)
	if h.TotalCount() != 1000 || p.P50 < 499 || p.P50 > 501 || p.Max < 999 || p.Max > 1001 {
		t.Errorf("decoded %d values, %+v", h.TotalCount(), p)
	}
}
