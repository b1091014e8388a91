package redis

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/internal/redistest"
)

// trimNow opens an engine on prefix whose appends trim at once: no grace,
// so that every append leaves the log exactly as retention says and the
// tests can compare it with a model after each one.
func trimNow(t *testing.T, url, prefix string, ret hub.Retention) (*Engine, *batches) {
	t.Helper()
	e := openNode(t, url, prefix, Options{Retention: ret})
	e.grace = 0 // before the first append and Listen, which read it
	b := &batches{}
	head, err := e.Listen(b.feed)
	if err != nil {
		t.Fatal(err)
	}
	b.feed(hub.Batch{Epoch: head.Epoch, After: head.Seq})
	return e, b
}

func presenceUpdate(id string) *hub.Update {
	u := enginetest.NewUpdate(id)
	u.Presence = true
	return u
}

// retainedModel returns what ret keeps of all (in Seq order) and the
// watermarks it implies: the highest Seq dropped of an update that is not
// a presence one, and of a presence update.
func retainedModel(all []*hub.Update, ret hub.Retention) (kept []*hub.Update, other, presence uint64) {
	var cut uint64
	n := 0
	for i := len(all) - 1; i >= 0; i-- {
		if !all[i].Presence {
			if n++; n > ret.MaxCount {
				cut = all[i].Seq
				break
			}
		}
	}
	p := 0
	for i := len(all) - 1; i >= 0; i-- {
		u := all[i]
		dropped := u.Seq <= cut
		if u.Presence && !dropped {
			p++
			dropped = p > ret.MaxPresence
		}
		switch {
		case !dropped:
			kept = append(kept, u)
		case u.Presence:
			presence = max(presence, u.Seq)
		default:
			other = max(other, u.Seq)
		}
	}
	slices.Reverse(kept)
	return kept, other, presence
}

// presenceList returns the Seqs in the presence list, checking that each
// element carries its entry's fields.
func presenceList(t *testing.T, e *Engine) ([]string, error) {
	t.Helper()
	l, err := e.rdb.LRange(t.Context(), e.keys.plog, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(l))
	for i, p := range l {
		f := strings.SplitN(p, ":", 4)
		if len(f) != 4 {
			t.Fatalf("presence list element %q: want Seq:append time:time:id", p)
		}
		m, err := e.rdb.XRange(t.Context(), e.keys.log, f[0]+"-0", f[0]+"-0").Result()
		if err != nil {
			return nil, err
		}
		if len(m) != 1 || fmt.Sprint(m[0].Values["a"], m[0].Values["t"], m[0].Values["i"]) != fmt.Sprint(f[1], f[2], f[3]) {
			t.Fatalf("presence list element %q, its entry %v", p, m)
		}
		out[i] = f[0]
	}
	return out, nil
}

// checkLog checks the keys under e against what ret keeps of all: the
// stream, the presence list, the id index, the watermarks, and what Read,
// Lookup and HistoryLen say, from every position.
func checkLog(t *testing.T, e *Engine, all []*hub.Update, ret hub.Retention) {
	t.Helper()
	ctx := t.Context()
	all = slices.SortedFunc(slices.Values(all), func(a, b *hub.Update) int { return int(a.Seq) - int(b.Seq) })
	kept, wOther, wPresence := retainedModel(all, ret)
	msgs, err := e.rdb.XRange(ctx, e.keys.log, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var gotSeqs, wantSeqs, wantPres []string
	for _, m := range msgs {
		d, _ := m.Values["d"].(string)
		gotSeqs = append(gotSeqs, fmt.Sprintf("%s/%v", strings.TrimSuffix(m.ID, "-0"), hub.RecordPresence([]byte(d))))
	}
	wantIDs := map[string][]string{}
	for _, u := range kept {
		s := strconv.FormatUint(u.Seq, 10)
		wantSeqs = append(wantSeqs, fmt.Sprintf("%s/%v", s, u.Presence))
		if u.Presence {
			wantPres = append(wantPres, s)
		}
		wantIDs[u.ID] = append(wantIDs[u.ID], s)
	}
	if fmt.Sprint(gotSeqs) != fmt.Sprint(wantSeqs) {
		t.Fatalf("stream holds Seq/presence %v, want %v", gotSeqs, wantSeqs)
	}
	plist, err := presenceList(t, e)
	if err != nil || fmt.Sprint(plist) != fmt.Sprint(wantPres) {
		t.Fatalf("presence list = %v, %v; want %v", plist, err, wantPres)
	}
	ids, err1 := e.rdb.HGetAll(ctx, e.keys.ids).Result()
	dups, err2 := e.rdb.HGetAll(ctx, e.keys.dups).Result()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	wantIndex, wantDups := map[string]string{}, map[string]string{}
	for id, ss := range wantIDs {
		wantIndex[id] = ss[0]
		if len(ss) > 1 {
			wantDups[id] = strings.Join(ss[1:], ",") + ","
		}
	}
	if fmt.Sprint(ids) != fmt.Sprint(wantIndex) || fmt.Sprint(dups) != fmt.Sprint(wantDups) {
		t.Fatalf("index ids %v dups %v; want %v and %v", ids, dups, wantIndex, wantDups)
	}
	// The watermarks as stored, once anything was dropped; a log that
	// never dropped anything may have none yet.
	if v, err := e.rdb.HMGet(ctx, e.keys.dropped, "other", "presence").Result(); err != nil {
		t.Fatal(err)
	} else if v[0] != nil && fmt.Sprint(v) != fmt.Sprint([]any{strconv.FormatUint(wOther, 10), strconv.FormatUint(wPresence, 10)}) {
		t.Fatalf("watermarks (other, presence) = %v, want %d, %d", v, wOther, wPresence)
	}
	head := all[len(all)-1].Seq
	epoch := e.epoch.Load()
	for after := uint64(0); after <= head; after++ {
		r, err := e.Read(ctx, hub.Position{Epoch: epoch, Seq: after}, len(all)+1)
		if err != nil {
			t.Fatalf("Read(%d): %v", after, err)
		}
		var want []uint64
		for _, u := range kept {
			if u.Seq > after {
				want = append(want, u.Seq)
			}
		}
		if fmt.Sprint(seqs(r.Updates)) != fmt.Sprint(want) || r.Head != head ||
			r.Gap != (after < wOther) || r.PresenceGap != (after < wPresence) {
			t.Fatalf("Read(%d) = Seqs %v, Head %d, Gap %v, PresenceGap %v; want %v, %d, %v, %v",
				after, seqs(r.Updates), r.Head, r.Gap, r.PresenceGap, want, head, after < wOther, after < wPresence)
		}
	}
	for _, u := range all {
		pos, ok, err := e.Lookup(ctx, u.ID)
		want, found := wantIDs[u.ID]
		if err != nil || ok != found || found && strconv.FormatUint(pos.Seq, 10) != want[0] || !found && pos.Seq != head {
			t.Fatalf("Lookup(%q) = %+v, %v, %v; want found %v (%v)", u.ID, pos, ok, err, found, want)
		}
	}
	if n := e.HistoryLen(); n != len(kept) {
		t.Fatalf("HistoryLen = %d, want %d", n, len(kept))
	}
}

// TestPresenceTrim: a random churn of both kinds, appended in concurrent
// bursts so that scripts carry several at once, with ids that recur
// across kinds. After each burst, the stream, the presence list, the id
// index (a presence update dropped from the middle may be a later
// occurrence of an id still retained) and the watermarks are exactly what
// retention keeps, and Read reports Gap and PresenceGap from them.
func TestPresenceTrim(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, s^0x5eed))
	for round := range 4 {
		ret := hub.Retention{MaxCount: 1 + rng.IntN(8), MaxPresence: 1 + rng.IntN(8)}
		t.Logf("round %d: %+v", round, ret)
		e, _ := trimNow(t, url, fmt.Sprintf("ptrim%d", round), ret)
		share := 2 + rng.IntN(6) // one in share is not a presence update
		var all []*hub.Update
		for range 30 {
			burst := make([]*hub.Update, 1+rng.IntN(6))
			for i := range burst {
				id := fmt.Sprintf("u%d", len(all)+i)
				if rng.IntN(3) == 0 {
					// Recurring, and with what separates the fields of
					// a presence list element.
					id = []string{"same", "urn:uuid:same", "{x}:1: \xff é:"}[rng.IntN(3)]
				}
				burst[i] = enginetest.NewUpdate(id)
				burst[i].Presence = rng.IntN(share) != 0
			}
			var wg sync.WaitGroup
			errs := make([]error, len(burst))
			for i, u := range burst {
				wg.Go(func() { errs[i] = e.Append(t.Context(), u) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			all = append(all, burst...)
			checkLog(t, e, all, ret)
		}
	}
}

// TestPresenceAge: MaxAge drops updates of both kinds, from the front of
// the log and from the front of the presence updates: an old presence
// update behind a young update goes from the middle, an old update of the
// other kind stays behind a young one.
func TestPresenceAge(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	e, _ := trimNow(t, url, "page", hub.Retention{MaxAge: time.Hour})
	old, young := time.Now().Add(-2*time.Hour), time.Now()
	var all []*hub.Update
	for _, x := range []struct {
		id       string
		presence bool
		t        time.Time
	}{
		{"p1", true, old}, {"o2", false, old}, {"p3", true, old}, {"o4", false, young},
		{"o5", false, old}, {"p6", true, old}, {"p7", true, young},
	} {
		u := enginetest.NewUpdate(x.id)
		u.Presence, u.Time = x.presence, x.t
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		all = append(all, u)
	}
	// Kept: o4, o5 (behind o4), p7. Dropped: p1, o2, p3 from the front,
	// p6 from the middle.
	epoch := e.epoch.Load()
	for after, want := range []string{"[4 5 7] true true", "[4 5 7] true true", "[4 5 7] false true", "[4 5 7] false true",
		"[5 7] false true", "[7] false true", "[7] false false", "[] false false"} {
		r, err := e.Read(t.Context(), hub.Position{Epoch: epoch, Seq: uint64(after)}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(seqs(r.Updates), r.Gap, r.PresenceGap); got != want {
			t.Errorf("Read(%d) = %s (Seqs, Gap, PresenceGap), want %s", after, got, want)
		}
	}
	if l, err := presenceList(t, e); err != nil || fmt.Sprint(l) != "[7]" {
		t.Errorf("presence list = %v, %v; want [7]", l, err)
	}
	for id, found := range map[string]bool{"p1": false, "o2": false, "p6": false, "o5": true, "p7": true} {
		if _, ok, err := e.Lookup(t.Context(), id); err != nil || ok != found {
			t.Errorf("Lookup(%s) = %v, %v; want %v", id, ok, err, found)
		}
	}
}

// TestPresenceWatermarksRestart: the watermarks are Redis keys like the
// log: after Redis restarts from its append-only file, the node that was
// connected and a node opened afterwards report the same gaps, and
// retention goes on counting both kinds apart from where it was.
func TestPresenceWatermarksRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Persist: true})
	ret := hub.Retention{MaxCount: 2, MaxPresence: 2}
	e, _ := trimNow(t, srv.URL(), "prestart", ret)
	var all []*hub.Update
	for i, presence := range []bool{false, true, true, false, true, false, false, true, true, true} {
		u := enginetest.NewUpdate(fmt.Sprintf("r%d", i))
		u.Presence = presence
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		all = append(all, u)
	}
	checkLog(t, e, all, ret)
	srv.Kill()
	srv.Restart()
	waitFor(t, "the node reads again", func() bool {
		_, err := e.Read(t.Context(), hub.Position{Epoch: e.epoch.Load()}, 1)
		return err == nil
	})
	checkLog(t, e, all, ret)
	e2, _ := trimNow(t, srv.URL(), "prestart", ret)
	if e2.epoch.Load() != e.epoch.Load() {
		t.Fatalf("a node opened after the restart found epoch %d, the log's is %d", e2.epoch.Load(), e.epoch.Load())
	}
	checkLog(t, e2, all, ret)
	for i, presence := range []bool{true, false, true} {
		u := enginetest.NewUpdate(fmt.Sprintf("after%d", i))
		u.Presence = presence
		if err := e2.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		all = append(all, u)
	}
	checkLog(t, e, all, ret)
}

// TestPresenceLegacyLog: a log written before presence updates were
// retained apart has no watermarks and no presence list, and its records
// have no presence flag; it was trimmed from the front only. Reads report
// the gap before its first entry, and the first trim by this version
// records the watermarks from there.
func TestPresenceLegacyLog(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	ret := hub.Retention{MaxCount: 4, MaxPresence: 1}
	e, _ := trimNow(t, url, "plegacy", ret)
	var all []*hub.Update
	for i := range 6 {
		u := enginetest.NewUpdate(fmt.Sprintf("l%d", i))
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		all = append(all, u)
	}
	// What the previous version left: the same stream and index, no
	// watermarks, no presence list.
	if err := e.rdb.Del(t.Context(), e.keys.dropped, e.keys.plog).Err(); err != nil {
		t.Fatal(err)
	}
	checkLog(t, e, all, ret)
	for i, presence := range []bool{true, false, true} {
		u := enginetest.NewUpdate(fmt.Sprintf("new%d", i))
		u.Presence = presence
		if err := e.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		all = append(all, u)
		checkLog(t, e, all, ret)
	}
	v, err := e.rdb.HMGet(t.Context(), e.keys.dropped, "other", "presence").Result()
	if err != nil || fmt.Sprint(v) != "[3 7]" {
		t.Fatalf("watermarks = %v, %v; want [3 7]", v, err)
	}
	// A log from before that retention emptied: everything up to the head
	// is gone.
	head := all[len(all)-1].Seq
	if err := e.rdb.XTrimMinID(t.Context(), e.keys.log, fmt.Sprintf("%d-0", head+1)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.Del(t.Context(), e.keys.dropped, e.keys.plog).Err(); err != nil {
		t.Fatal(err)
	}
	for _, after := range []uint64{0, head - 1, head} {
		r, err := e.Read(t.Context(), hub.Position{Epoch: e.epoch.Load(), Seq: after}, 10)
		if err != nil || len(r.Updates) != 0 || r.Gap != (after < head) || r.PresenceGap {
			t.Fatalf("Read(%d) of an emptied log from before = %v, Gap %v, PresenceGap %v, %v; want nothing, Gap %v",
				after, seqs(r.Updates), r.Gap, r.PresenceGap, err, after < head)
		}
	}
}

// blockingFeed is a feed that a test can hold, as a node whose feed falls
// behind: while held, the next batch waits in the feed until released.
type blockingFeed struct {
	batches
	mu      sync.Mutex
	hold    bool
	entered chan struct{}
	release chan struct{}
}

func newBlockingFeed() *blockingFeed {
	return &blockingFeed{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (f *blockingFeed) feed(x hub.Batch) {
	f.mu.Lock()
	hold := f.hold
	f.hold = false
	f.mu.Unlock()
	f.batches.feed(x)
	if hold {
		f.entered <- struct{}{}
		<-f.release
	}
}

// holdNext makes the next batch wait in the feed, once it is recorded,
// until a send on release.
func (f *blockingFeed) holdNext() {
	f.mu.Lock()
	f.hold = true
	f.mu.Unlock()
}

// skips returns the batches whose After is past the last Seq fed before
// them.
func (b *batches) skips() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	var epoch, last uint64
	for _, x := range b.bs {
		if x.Epoch != epoch {
			epoch, last = x.Epoch, x.After
		}
		if x.After != last {
			out = append(out, fmt.Sprintf("after %d, last fed %d", x.After, last))
		}
		for _, u := range x.Updates {
			last = u.Seq
		}
	}
	return out
}

// TestPresenceLaggingNode: a node whose feed falls behind while another
// node's appends drop presence updates from the middle of the log goes on
// without a skip: those updates are gone for every reader. Updates of the
// other kind dropped before it read them are a skip, as before.
func TestPresenceLaggingNode(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	ret := hub.Retention{MaxCount: 3, MaxPresence: 2}
	a, _ := trimNow(t, url, "plag", ret)
	b := openNode(t, url, "plag", Options{Retention: ret})
	f := newBlockingFeed()
	t.Cleanup(func() { close(f.release) }) // before b closes, which waits for its feed
	head, err := b.Listen(f.feed)
	if err != nil {
		t.Fatal(err)
	}
	f.batches.feed(hub.Batch{Epoch: head.Epoch, After: head.Seq})
	appendKinds := func(prefix string, kinds ...bool) []*hub.Update {
		var us []*hub.Update
		for i, presence := range kinds {
			u := enginetest.NewUpdate(fmt.Sprintf("%s%d", prefix, i))
			u.Presence = presence
			if err := a.Append(t.Context(), u); err != nil {
				t.Fatal(err)
			}
			us = append(us, u)
		}
		return us
	}

	f.holdNext()
	first := appendKinds("first", false)[0]
	<-f.entered
	// While b's feed waits: a churn of presence updates, of which a's
	// appends drop all but the last two, and two other updates.
	churn := appendKinds("churn", true, true, true, true, false, true, true, true, false, true)
	f.release <- struct{}{}
	all := append([]*hub.Update{first}, churn...)
	kept, _, _ := retainedModel(all, ret)
	waitFor(t, "b fed what is retained", func() bool {
		_, last := f.state()
		return last == all[len(all)-1].Seq
	})
	if got, want := fmt.Sprint(f.fedIDs()), fmt.Sprint(ids(kept)); got != want {
		t.Fatalf("b fed %s, want what is retained: %s", got, want)
	}
	if s := f.skips(); len(s) > 0 {
		t.Fatalf("b's feed skipped over presence updates dropped from the middle: %v", s)
	}

	// Now updates of the other kind go before b reads them: a skip.
	f.holdNext()
	marker := appendKinds("marker", true)[0]
	<-f.entered
	more := appendKinds("more", false, false, false, false, false)
	f.release <- struct{}{}
	waitFor(t, "b fed the last", func() bool { _, last := f.state(); return last == more[len(more)-1].Seq })
	if s := f.skips(); len(s) != 1 || s[0] != fmt.Sprintf("after %d, last fed %d", more[1].Seq, marker.Seq) {
		t.Fatalf("skips %v; want one, from %d to after %d (the updates dropped unread)", s, marker.Seq, more[1].Seq)
	}
}

func ids(us []*hub.Update) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.ID
	}
	return out
}

// TestPresenceNodes: two nodes append both kinds at once to one log. The
// presence list, the index and the watermarks they share stay exactly
// what retention keeps; both read the same gaps; and both feed every
// update that is not a presence one, in the same order, without a skip.
func TestPresenceNodes(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	s := seed(t)
	ret := hub.Retention{MaxCount: 1000, MaxPresence: 5}
	n1, b1 := trimNow(t, url, "pnodes", ret)
	n2, b2 := trimNow(t, url, "pnodes", ret)
	var mu sync.Mutex
	var all []*hub.Update
	var wg sync.WaitGroup
	for w, e := range []*Engine{n1, n2, n1, n2} {
		rng := rand.New(rand.NewPCG(s, uint64(w)))
		wg.Go(func() {
			for i := range 150 {
				u := enginetest.NewUpdate(fmt.Sprintf("w%d-%d", w, i))
				u.Presence = rng.IntN(4) != 0
				if err := e.Append(t.Context(), u); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				all = append(all, u)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	checkLog(t, n1, all, ret)
	checkLog(t, n2, all, ret)
	var others []string
	presence := map[string]bool{}
	for _, u := range all {
		presence[u.ID] = u.Presence
	}
	for _, u := range slices.SortedFunc(slices.Values(all), func(a, b *hub.Update) int { return int(a.Seq) - int(b.Seq) }) {
		if !u.Presence {
			others = append(others, u.ID)
		}
	}
	last := uint64(len(all))
	for i, b := range []*batches{b1, b2} {
		waitFor(t, "fed to the head", func() bool { _, l := b.state(); return l == last })
		var fedOthers []string
		for _, id := range b.fedIDs() {
			if !presence[id] {
				fedOthers = append(fedOthers, id)
			}
		}
		if fmt.Sprint(fedOthers) != fmt.Sprint(others) {
			t.Errorf("node %d fed %d updates of the other kind, want all %d in Seq order", i+1, len(fedOthers), len(others))
		}
		if s := b.skips(); len(s) > 0 {
			t.Errorf("node %d skipped: %v", i+1, s)
		}
	}
}
