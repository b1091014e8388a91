package enginetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/sse"
)

// The handover test is model-based: a hub runs on the engine under test
// while publishers publish to random topics, subscribers come with random
// resume points (a recent id, an old one that retention may have dropped,
// an unknown one, "earliest", none), read slowly or promptly and leave at
// random, retention by count and by age drops history in between, and the
// dispatcher is made to fall behind the feed. An oracle built from what
// was acknowledged then checks each subscriber: it got a run of the
// updates for its topics, each exactly once and in order, starting right
// after its resume point unless the response said otherwise (ResumedFrom
// is "earliest"), and ending only where its stream ended; a run cut short
// by a loss ended with hub.ErrLost. Live subscribers got everything
// published after they subscribed.
//
// HERALD_HANDOVER_SEED=n replays one seed; the seed is printed on failure.

// handoverRounds is how many seeds one run of the suite tries.
const handoverRounds = 4

// seeds returns rounds random seeds, or the one the environment
// variable env names.
func seeds(t *testing.T, env string, rounds int) []uint64 {
	if v := os.Getenv(env); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", env, v, err)
		}
		return []uint64{n}
	}
	out := make([]uint64, rounds)
	for i := range out {
		out[i] = rand.Uint64()
	}
	return out
}

func (s *suite) testHandover(t *testing.T) {
	for _, seed := range seeds(t, "HERALD_HANDOVER_SEED", handoverRounds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("replay with HERALD_HANDOVER_SEED=%d", seed)
				}
			})
			s.handoverRound(t, seed)
		})
	}
}

// model is what the oracle knows: every acknowledged update by Seq.
type model struct {
	mu      sync.Mutex
	bySeq   map[uint64]*hub.Update
	byID    map[string]*hub.Update
	started map[string]time.Time // when each Publish was called
	bornOld map[string]bool      // published while the clock made updates born expired
	ids     []string             // in acknowledgement order, for picking resume points
}

func (m *model) add(u *hub.Update, started time.Time, bornOld bool) {
	m.mu.Lock()
	m.bornOld[u.ID] = bornOld
	m.bySeq[u.Seq] = u
	m.byID[u.ID] = u
	m.started[u.ID] = started
	m.ids = append(m.ids, u.ID)
	m.mu.Unlock()
}

// session is one subscription and what it received.
type session struct {
	topics   map[string]bool
	mode     string // "id", "earliest", "unknown", "live"
	from     uint64 // Seq of the resume id, for mode "id"
	resumed  string // ResumedFrom
	lastID   string
	returned time.Time // when Subscribe returned
	sink     *sink
	done     chan error
	cancel   context.CancelFunc
	kept     bool // stays until the end
}

// sink is a hub.Stream that keeps the frames written to it and can be
// made slow.
type sink struct {
	mu    sync.Mutex
	buf   []byte
	slow  time.Duration
	delay atomic.Bool
}

func (k *sink) Write(p []byte) (int, error) {
	if k.delay.Load() {
		time.Sleep(k.slow)
	}
	k.mu.Lock()
	k.buf = append(k.buf, p...)
	k.mu.Unlock()
	return len(p), nil
}
func (k *sink) Flush() error                     { return nil }
func (k *sink) SetWriteDeadline(time.Time) error { return nil }

func (k *sink) ids(t testing.TB) []string {
	k.mu.Lock()
	data := bytes.Clone(k.buf)
	k.mu.Unlock()
	rd := sse.NewReader(bytes.NewReader(data))
	var out []string
	for {
		ev, err := rd.Next()
		if err != nil {
			return out
		}
		out = append(out, ev.ID)
	}
}

func (s *suite) handoverRound(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var rmu sync.Mutex // rng is not safe for concurrent use
	intn := func(n int) int {
		rmu.Lock()
		defer rmu.Unlock()
		return rng.IntN(n)
	}

	ret := hub.Retention{MaxCount: 20 + intn(300), MaxAge: time.Hour}
	// Some rounds keep everything: nothing may then be reported lost, and
	// "earliest" means from the very first update.
	keepAll := intn(4) == 0
	if keepAll {
		ret.MaxCount = 100_000
	}
	e := s.open(t, t.TempDir(), ret)
	// Born expired: while old is set, published updates carry a Time past
	// MaxAge, so retention by age drops them as soon as they are at the
	// front, and the front moves by age as well as by count.
	var old atomic.Bool
	cfg := hub.Config{
		Engine:      e,
		Heartbeat:   -1,
		Liveness:    -1,
		WriteDelay:  -1,
		ReplayBatch: 1 + intn(64),
		QueueBytes:  1 << 20,
		Now: func() time.Time {
			if old.Load() {
				return time.Now().Add(-2 * time.Hour)
			}
			return time.Now()
		},
	}
	if intn(2) == 0 {
		// A small inbox: the dispatcher falls behind the feed and reads
		// back from the engine, and with little retention it finds gaps.
		cfg.InboxBytes = 256 * (1 + intn(8))
	}
	if intn(3) == 0 {
		// Small queues: replays overflow what they keep for the handover.
		cfg.QueueBytes = 2048 * (1 + intn(4))
	}
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		if c, ok := e.(hub.Closer); ok {
			_ = c.Close()
		}
	})
	t.Logf("retention %+v, replay batch %d, inbox %d, queue %d", ret, cfg.ReplayBatch, cfg.InboxBytes, cfg.QueueBytes)

	topics := []string{"https://example.com/a", "https://example.com/b", "https://example.com/c"}
	m := &model{bySeq: make(map[uint64]*hub.Update), byID: make(map[string]*hub.Update), started: make(map[string]time.Time), bornOld: make(map[string]bool)}
	ctx := t.Context()

	// Publishers.
	const publishers, perPublisher = 3, 400
	var pubs sync.WaitGroup
	var published atomic.Uint64 // highest Seq acknowledged
	for p := range publishers {
		pubs.Go(func() {
			for i := range perPublisher {
				if intn(50) == 0 {
					old.Store(!old.Load() && !keepAll)
				}
				topic := topics[intn(len(topics))]
				started := time.Now()
				wasOld := old.Load()
				u, err := h.Publish(ctx, hub.Message{ID: fmt.Sprintf("p%d-%d", p, i), Topics: []string{topic}, Data: "x"})
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				m.add(u, started, wasOld || old.Load())
				for {
					cur := published.Load()
					if u.Seq <= cur || published.CompareAndSwap(cur, u.Seq) {
						break
					}
				}
				if intn(8) == 0 {
					time.Sleep(time.Duration(intn(300)) * time.Microsecond)
				}
			}
		})
	}

	// Subscribers come and go while the publishers run.
	var (
		sessions []*session
		serving  sync.WaitGroup
	)
	pubsDone := make(chan struct{})
	go func() { pubs.Wait(); close(pubsDone) }()
	subscribe := func(kept bool) {
		ss := &session{topics: make(map[string]bool), sink: &sink{slow: time.Duration(intn(200)) * time.Microsecond}, done: make(chan error, 1), kept: kept}
		var matchers []*hub.Matcher
		for _, tp := range topics {
			if intn(2) == 0 {
				ss.topics[tp] = true
				mt, err := hub.NewMatcher(hub.MatchExact, tp, "")
				if err != nil {
					t.Fatal(err)
				}
				matchers = append(matchers, mt)
			}
		}
		if len(matchers) == 0 {
			ss.topics[topics[0]] = true
			mt, _ := hub.NewMatcher(hub.MatchExact, topics[0], "")
			matchers = append(matchers, mt)
		}
		o := hub.SubscribeOptions{Matchers: matchers}
		m.mu.Lock()
		n := len(m.ids)
		switch k := intn(10); {
		case k < 5 && n > 0:
			// A recent id, or one retention has likely dropped.
			i := n - 1 - intn(min(n, 1+ret.MaxCount/2))
			if intn(3) == 0 {
				i = intn(n)
			}
			ss.mode, ss.lastID = "id", m.ids[i]
			ss.from = m.byID[ss.lastID].Seq
		case k < 7:
			ss.mode, ss.lastID = "earliest", hub.EarliestID
		case k < 8:
			ss.mode, ss.lastID = "unknown", "never-published"
		default:
			ss.mode = "live"
		}
		m.mu.Unlock()
		if ss.mode != "live" {
			o.Resume, o.LastEventID = true, ss.lastID
		}
		sctx, cancel := context.WithCancel(ctx)
		ss.cancel = cancel
		sub, err := h.Subscribe(sctx, o)
		if err != nil {
			cancel()
			t.Fatalf("Subscribe: %v", err)
		}
		ss.returned = time.Now()
		ss.resumed = sub.ResumedFrom()
		if intn(3) == 0 {
			ss.sink.delay.Store(true)
		}
		sessions = append(sessions, ss)
		serving.Go(func() { ss.done <- sub.Serve(sctx, ss.sink) })
	}
	for i := 0; ; i++ {
		select {
		case <-pubsDone:
		default:
			subscribe(intn(3) == 0)
			if i%4 == 3 {
				// End a random earlier session that is not kept.
				if ss := sessions[intn(len(sessions))]; !ss.kept {
					ss.cancel()
				}
			}
			time.Sleep(time.Duration(intn(2000)) * time.Microsecond)
			continue
		}
		break
	}
	// A few after the last publish: pure replays.
	for range 3 {
		subscribe(true)
	}
	if t.Failed() {
		return
	}

	last := published.Load()
	all := make([]*hub.Update, 0, last)
	for seq := uint64(1); seq <= last; seq++ {
		u := m.bySeq[seq]
		if u == nil {
			t.Fatalf("Seq %d was never acknowledged, though %d was: Seqs must take every position", seq, last)
		}
		all = append(all, u)
	}

	// Kept sessions must reach the last update for them, or end.
	for _, ss := range sessions {
		if !ss.kept {
			continue
		}
		ss.sink.delay.Store(false)
		// A session that may have gone live without a replay (no resume,
		// an unknown id, or one retention had dropped) is owed only what
		// was published after it subscribed.
		liveOnly := ss.mode == "live" || ss.mode == "unknown" || ss.mode == "id" && ss.resumed == hub.EarliestID
		// Older updates come only through a replay, and only those the
		// history still held: not one born expired (it may have gone at
		// once), nor one followed by MaxCount others (gone by count). A
		// fresh update stops retention by age at the front, so one that
		// is recent enough was still there.
		var want string
		for i := len(all) - 1; i >= 0; i-- {
			u := all[i]
			if !ss.topics[u.Topics[0]] {
				continue
			}
			if ss.mode == "id" && u.Seq <= ss.from {
				break
			}
			if m.started[u.ID].After(ss.returned) {
				want = u.ID
				break
			}
			if liveOnly {
				break
			}
			if !m.bornOld[u.ID] && last-u.Seq < uint64(ret.MaxCount) {
				want = u.ID
				break
			}
		}
		deadline := time.Now().Add(s.opts.Timeout)
		for want != "" {
			ids := ss.sink.ids(t)
			if slices.Contains(ids, want) {
				break
			}
			select {
			case err := <-ss.done:
				ss.done <- err // for the check below
				want = ""
				continue
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("a kept %s session (resumed %q) stopped at %d updates, never got %q", ss.mode, ss.resumed, len(ids), want)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	for _, ss := range sessions {
		ss.cancel()
	}
	serving.Wait()

	for i, ss := range sessions {
		var reason error
		select {
		case reason = <-ss.done:
		default:
		}
		if keepAll && errors.Is(reason, hub.ErrLost) {
			t.Errorf("session %d (%s %q) ended with ErrLost, but the history kept everything", i, ss.mode, ss.lastID)
		}
		if keepAll && ss.mode == "earliest" {
			if got := ss.sink.ids(t); len(got) > 0 {
				for _, u := range all {
					if ss.topics[u.Topics[0]] {
						if got[0] != u.ID {
							t.Errorf("session %d: earliest started at %q, but the history kept %q", i, got[0], u.ID)
						}
						break
					}
				}
			}
		}
		if keepAll && ss.mode == "id" && ss.resumed != ss.lastID {
			t.Errorf("session %d: resume from %q answered %q, but the history kept everything", i, ss.lastID, ss.resumed)
		}
		checkSession(t, i, ss, all, m, reason)
	}
}

// checkSession is the oracle for one session.
func checkSession(t *testing.T, i int, ss *session, all []*hub.Update, m *model, reason error) {
	byID := m.byID
	t.Helper()
	got := ss.sink.ids(t)
	name := fmt.Sprintf("session %d (%s %q, resumed %q, ended %v)", i, ss.mode, ss.lastID, ss.resumed, reason)
	// The updates for this session, in Seq order.
	var mine []*hub.Update
	for _, u := range all {
		if ss.topics[u.Topics[0]] {
			mine = append(mine, u)
		}
	}
	if len(got) == 0 {
		return // a session that ended early; kept ones were checked for progress
	}
	first, ok := byID[got[0]]
	if !ok {
		t.Fatalf("%s: got unknown id %q", name, got[0])
	}
	start := slices.IndexFunc(mine, func(u *hub.Update) bool { return u.ID == first.ID })
	if start < 0 {
		t.Fatalf("%s: got %q, which is not for its topics", name, got[0])
	}
	// Each exactly once, in order, with nothing left out between.
	for j, id := range got {
		if start+j >= len(mine) || mine[start+j].ID != id {
			want := "nothing"
			if start+j < len(mine) {
				want = fmt.Sprintf("%q (Seq %d)", mine[start+j].ID, mine[start+j].Seq)
			}
			u := byID[id]
			seq := uint64(0)
			if u != nil {
				seq = u.Seq
			}
			t.Fatalf("%s: update %d is %q (Seq %d), want %s: a skip, repeat or disorder", name, j, id, seq, want)
		}
	}
	// Where the run starts.
	switch ss.mode {
	case "id":
		next := slices.IndexFunc(mine, func(u *hub.Update) bool { return u.Seq > ss.from })
		if ss.resumed == ss.lastID && start != next {
			t.Fatalf("%s: resumed exactly after Seq %d, but the first update is Seq %d (want Seq %d)", name, ss.from, first.Seq, mine[next].Seq)
		}
		if first.Seq <= ss.from {
			t.Fatalf("%s: first update Seq %d is not after the resume point %d", name, first.Seq, ss.from)
		}
	case "unknown", "live":
		if ss.resumed != "" && ss.mode == "live" {
			t.Fatalf("%s: ResumedFrom %q without a resume", name, ss.resumed)
		}
		if ss.mode == "unknown" && ss.resumed != hub.EarliestID {
			t.Fatalf("%s: an unknown id must resume from earliest", name)
		}
		// Everything published after Subscribe returned was delivered:
		// the run started at or before the first such update.
		for _, u := range mine[:start] {
			if m.started[u.ID].After(ss.returned) {
				t.Fatalf("%s: missed Seq %d, published after it subscribed (first delivered: %d)", name, u.Seq, first.Seq)
			}
		}
	}
}
