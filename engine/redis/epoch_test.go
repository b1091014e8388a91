package redis

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
)

// batches is a feed that keeps what it gets.
type batches struct {
	mu sync.Mutex
	bs []hub.Batch
}

func (b *batches) feed(x hub.Batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	x.Updates = append([]*hub.Update(nil), x.Updates...)
	b.bs = append(b.bs, x)
}

// state returns the epoch of the last batch and the last Seq fed in it.
func (b *batches) state() (epoch, last uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, x := range b.bs {
		if x.Epoch != epoch {
			epoch, last = x.Epoch, x.After
		}
		for _, u := range x.Updates {
			last = u.Seq
		}
	}
	return epoch, last
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// node opens an engine on the log under prefix and listens with a
// recording feed.
func node(t *testing.T, url, prefix string) (*Engine, *batches, hub.Position) {
	t.Helper()
	e, err := Open(t.Context(), url, Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	b := &batches{}
	head, err := e.Listen(b.feed)
	if err != nil {
		t.Fatal(err)
	}
	b.feed(hub.Batch{Epoch: head.Epoch, After: head.Seq})
	return e, b, head
}

// staleReplica makes the log under e look like a replica that missed
// every write after Seq keep, as a failover to it would: the stream, the
// index and the head go back, and the epoch stays.
var staleReplica = goredis.NewScript(`
local keep = tonumber(ARGV[1])
local es = redis.call('XRANGE', KEYS[2], '-', string.format('%d-0', keep))
redis.call('DEL', KEYS[2])
for _, e in ipairs(es) do redis.call('XADD', KEYS[2], e[1], unpack(e[2])) end
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) > keep then redis.call('HDEL', KEYS[3], all[i]) end
end
redis.call('HSET', KEYS[1], 'seq', keep, 'nonce', es[#es][2][6])
return #es
`)

// TestStaleReplica: a log that went back under the same epoch and grew
// again (a failover to a replica that missed the last writes, then new
// publishes) holds other updates at the Seqs the nodes fed. Each node's
// feed notices that the update at its last Seq is not the one it fed, and
// the log gets a new epoch, the same on every node, so that streams end
// and resume instead of skipping the new updates silently.
func TestStaleReplica(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	e1, b1, head := node(t, url, "stale")
	e2, b2, _ := node(t, url, "stale")
	for i := range 5 {
		if err := e1.Append(t.Context(), enginetest.NewUpdate(fmt.Sprintf("before-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []*batches{b1, b2} {
		waitFor(t, "both nodes fed 5", func() bool { _, last := b.state(); return last == 5 })
	}
	k := e1.keys
	if err := staleReplica.Run(t.Context(), e1.rdb, []string{k.meta, k.log, k.ids, k.dups}, 3).Err(); err != nil {
		t.Fatal(err)
	}
	var after []*hub.Update
	for i := range 3 {
		u := enginetest.NewUpdate(fmt.Sprintf("after-%d", i))
		if err := e2.Append(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		after = append(after, u)
	}
	if after[0].Seq != 4 {
		t.Fatalf("first append on the stale log got Seq %d, want 4", after[0].Seq)
	}
	var epoch uint64
	waitFor(t, "both feeds open the same new epoch", func() bool {
		ep1, _ := b1.state()
		ep2, _ := b2.state()
		epoch = ep1
		return ep1 != head.Epoch && ep1 == ep2
	})
	if _, err := e1.Read(t.Context(), hub.Position{Epoch: head.Epoch}, 10); !errors.Is(err, hub.ErrEpoch) {
		t.Errorf("Read in the old epoch: %v, want hub.ErrEpoch", err)
	}
	r, err := e2.Read(t.Context(), hub.Position{Epoch: epoch, Seq: 3}, 10)
	if err != nil || len(r.Updates) != 3 || r.Updates[0].ID != "after-0" {
		t.Fatalf("Read after Seq 3 in the new epoch = %v, %v; want the 3 updates published after the failover", seqs(r.Updates), err)
	}
	// What was published on the stale log, before the nodes noticed, is
	// fed on both, in the new epoch: the feed starts where the new log
	// parts from what the nodes fed (Seq 3).
	for i, b := range []*batches{b1, b2} {
		waitFor(t, "the updates published after the failover fed", func() bool {
			ids := b.fedIDs()
			return len(ids) >= 3 && fmt.Sprint(ids[len(ids)-3:]) == "[after-0 after-1 after-2]"
		})
		if ids := b.fedIDs(); len(ids) != 8 {
			t.Errorf("node %d fed %v, want the 5 before and the 3 after once each", i+1, ids)
		}
	}
	pos, ok, err := e1.Lookup(t.Context(), "before-4")
	if err != nil || ok {
		t.Errorf("Lookup of an update the stale replica missed = %+v, %v, %v; want not found", pos, ok, err)
	}
	for i, e := range []*Engine{e1, e2} {
		if n := testutilCounter(e.m.epochChanges); n != 1 {
			t.Errorf("node %d counted %v epoch changes, want 1", i+1, n)
		}
	}
}

// TestIdleReplacement: a Redis restarted empty while nothing is published
// is noticed by the feed on its own, within its blocking read.
func TestIdleReplacement(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	e, b, head := node(t, url, "idle")
	if err := e.Append(t.Context(), enginetest.NewUpdate("one")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fed", func() bool { _, last := b.state(); return last == 1 })
	if err := e.rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new epoch", func() bool { ep, _ := b.state(); return ep != head.Epoch })
	ep, last := b.state()
	if last != 0 {
		t.Errorf("the new log's feed starts after Seq %d, want 0", last)
	}
	u := enginetest.NewUpdate("two")
	if err := e.Append(t.Context(), u); err != nil || u.Seq != 1 {
		t.Fatalf("Append in the new log: Seq %d, %v; want 1", u.Seq, err)
	}
	waitFor(t, "fed in the new epoch", func() bool { e2, l := b.state(); return e2 == ep && l == 1 })
}

// TestAppendBeforeTheFeedNotices: an append into a Redis just emptied
// starts the new log itself; the feed, which learns of it after, still
// feeds it, from the new log's origin.
func TestAppendBeforeTheFeedNotices(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	e, b, head := node(t, url, "race")
	appendN(t, e, "old", 3)
	waitFor(t, "fed", func() bool { return len(b.fedIDs()) == 3 })
	if err := e.rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := appendN(t, e, "fresh", 2)
	if fresh[0].Seq != 1 {
		t.Fatalf("first append after the flush got Seq %d, want 1", fresh[0].Seq)
	}
	waitFor(t, "the fresh updates fed", func() bool {
		ids := b.fedIDs()
		return len(ids) == 5
	})
	if ep, _ := b.state(); ep == head.Epoch {
		t.Error("fed in the old epoch")
	}
	if got := fmt.Sprint(b.fedIDs()); got != "[old-0 old-1 old-2 fresh-0 fresh-1]" {
		t.Errorf("fed %s", got)
	}
}

func seqs(us []*hub.Update) []uint64 {
	out := make([]uint64, len(us))
	for i, u := range us {
		out[i] = u.Seq
	}
	return out
}

func testutilCounter(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// TestFeedChain: updates that follow what the feed fed last are taken as
// its blocking read returns them; the checking script runs only now and
// then. If the nonce chain never matched, every read would be followed
// by a script.
func TestFeedChain(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	e, b, _ := node(t, url, "chain")
	const n = 100
	for i := range n {
		if err := e.Append(t.Context(), enginetest.NewUpdate(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "fed", func() bool { _, last := b.state(); return last == uint64(i+1) })
	}
	scripts, reads := histCount(e.m.rttOps["feed"]), histCount(e.m.rttOps["wait"])
	if 4*scripts >= n {
		t.Fatalf("%d updates fed with %d blocking reads and %d feed scripts: the reads' entries were not taken", n, reads, scripts)
	}
}

func histCount(o any) uint64 {
	var m dto.Metric
	if err := o.(interface{ Write(*dto.Metric) error }).Write(&m); err != nil {
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}

// TestReadPastUndecodable: a page of records that cannot be decoded (a
// gap to readers) does not hide the good update after it.
func TestReadPastUndecodable(t *testing.T) {
	url := "redis://" + startRedis(t) + "/0"
	e, _, head := node(t, url, "corrupt")
	appendN(t, e, "good", 2)
	k := e.keys
	for seq := 3; seq <= 7; seq++ {
		if err := e.rdb.XAdd(t.Context(), &goredis.XAddArgs{Stream: k.log, ID: fmt.Sprintf("%d-0", seq),
			Values: []any{"i", "bad", "t", "0", "n", "x", "d", "\xffnot a record", "a", "0", "p", "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.rdb.HSet(t.Context(), k.meta, "seq", 7, "nonce", "x").Err(); err != nil {
		t.Fatal(err)
	}
	last := appendN(t, e, "after", 1)[0]
	r, err := e.Read(t.Context(), hub.Position{Epoch: head.Epoch, Seq: 2}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Updates) != 1 || r.Updates[0].Seq != last.Seq || !r.Gap {
		t.Fatalf("Read after Seq 2 = Seqs %v, Gap %v; want the good update %d, with a gap", seqs(r.Updates), r.Gap, last.Seq)
	}
}
