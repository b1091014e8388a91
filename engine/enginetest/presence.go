package enginetest

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/herald-hub/herald/hub"
)

// presenceRounds is how many seeds one run of testPresence tries.
const presenceRounds = 6

// testPresence: presence updates are retained apart from the others.
// Each round appends a random mix of both kinds (mostly presence: a churn
// of subscribers) under a small random Retention, and checks the engine
// against a model of what retention keeps:
//
//   - no number of presence updates drops another update: MaxCount counts
//     the others only, and MaxPresence keeps the latest presence updates;
//   - dropping an update drops every presence update before it;
//   - Read reports Gap exactly when an update that is not a presence one
//     is missing after the position read from, and PresenceGap exactly
//     when a presence update is, from every position and every limit;
//   - Lookup finds what is retained and nothing else, and the feed
//     delivers everything, presence updates included;
//   - a durable engine keeps all of it, gaps included, across a reopen.
//
// HERALD_PRESENCE_SEED=n replays one seed; the seed is printed.
func (s *suite) testPresence(t *testing.T) {
	for _, seed := range seeds(t, "HERALD_PRESENCE_SEED", presenceRounds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d (HERALD_PRESENCE_SEED=%d replays it)", seed, seed)
			s.presenceRound(t, seed)
		})
	}
}

func (s *suite) presenceRound(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ret := hub.Retention{MaxCount: 1 + rng.IntN(8), MaxPresence: 1 + rng.IntN(8)}
	t.Logf("retention: MaxCount %d, MaxPresence %d", ret.MaxCount, ret.MaxPresence)
	dir := t.TempDir()
	in := s.start(t, dir, ret)
	n := 20 + rng.IntN(60)
	share := 1 + rng.IntN(4) // one update in share is not a presence update
	var all []*hub.Update
	for i := range n {
		u := NewUpdate(fmt.Sprintf("p%d", i))
		u.Presence = rng.IntN(share+1) != 0
		all = append(all, in.append(u))
		if rng.IntN(6) == 0 {
			in.presenceConsistent(all, ret, rng)
		}
	}
	want := presenceModel(all, ret)
	in.eventually("what retention keeps, exactly", func() error { return in.retained(want) })
	in.presenceConsistent(all, ret, rng)
	for _, u := range all {
		seq, ok := in.lookup(u.ID)
		if kept := contains(want, u); ok != kept || kept && seq != u.Seq {
			t.Errorf("Lookup(%q) (Seq %d, presence %v) = %d, %v; want found %v", u.ID, u.Seq, u.Presence, seq, ok, kept)
		}
	}
	in.fed(all)
	if !s.opts.Durable {
		return
	}
	in.close()
	in = s.start(t, dir, ret)
	if err := in.retained(want); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	in.presenceConsistent(all, ret, rng)
	// A reopened log goes on counting both kinds apart.
	more := in.append(NewUpdate("after-reopen"))
	p := NewUpdate("after-reopen-presence")
	p.Presence = true
	all = append(all, more, in.append(p))
	want = presenceModel(all, ret)
	in.eventually("after reopen and two appends, what retention keeps", func() error { return in.retained(want) })
	in.presenceConsistent(all, ret, rng)
}

// presenceModel returns what ret keeps of all, in Seq order: the last
// MaxCount updates that are not presence ones, and the last MaxPresence
// presence updates that are newer than every dropped update.
func presenceModel(all []*hub.Update, ret hub.Retention) []*hub.Update {
	var cut uint64 // Seq of the newest update dropped by MaxCount
	others := 0
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Presence {
			continue
		}
		if others++; others > ret.MaxCount {
			cut = all[i].Seq
			break
		}
	}
	var kept []*hub.Update
	presence := 0
	for i := len(all) - 1; i >= 0 && all[i].Seq > cut; i-- {
		u := all[i]
		if u.Presence {
			if presence++; presence > ret.MaxPresence {
				continue
			}
		}
		kept = append(kept, u)
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	return kept
}

func contains(us []*hub.Update, u *hub.Update) bool {
	for _, v := range us {
		if v.Seq == u.Seq {
			return true
		}
	}
	return false
}

// presenceConsistent checks what holds whatever the engine has dropped so
// far (shared engines may keep updates a little longer than retention
// says): it keeps at least what the model keeps, it never keeps a presence
// update older than a dropped update of the other kind, and each Read's
// Gap and PresenceGap say exactly what is missing after its position.
func (in *instance) presenceConsistent(all []*hub.Update, ret hub.Retention, rng *rand.Rand) {
	in.t.Helper()
	ctx := in.t.Context()
	bySeq := make(map[uint64]*hub.Update, len(all))
	for _, u := range all {
		bySeq[u.Seq] = u
	}
	last := all[len(all)-1].Seq
	for after := uint64(0); after <= last; after++ {
		limit := len(all) + 1
		if rng.IntN(3) == 0 {
			limit = 1 + rng.IntN(4)
		}
		r, err := in.e.Read(ctx, hub.Position{Epoch: in.head.Epoch, Seq: after}, limit)
		if err != nil {
			in.t.Fatalf("Read(%d, %d): %v", after, limit, err)
		}
		if len(r.Updates) > limit || r.Head < last {
			in.t.Fatalf("Read(%d, %d) returned %d updates, Head %d (last appended %d)", after, limit, len(r.Updates), r.Head, last)
		}
		got := make(map[uint64]bool, len(r.Updates))
		prev := after
		for _, u := range r.Updates {
			want := bySeq[u.Seq]
			if u.Seq <= prev || want == nil {
				in.t.Fatalf("Read(%d, %d) returned Seqs %v: want increasing, among those appended", after, limit, seqs(r.Updates))
			}
			if d := diff(u, want); d != "" {
				in.t.Fatalf("Read(%d, %d): %s", after, limit, d)
			}
			got[u.Seq] = true
			prev = u.Seq
		}
		// What a full read says is missing after `after`; a short read
		// answers for the part it covers, and the gaps for everything.
		full := len(r.Updates) < limit
		var end uint64 = last
		if !full {
			end = prev
		}
		var missingOther, missingPresence bool
		var newestDropped uint64 // of the other kind, up to end
		for seq := after + 1; seq <= end; seq++ {
			if got[seq] {
				continue
			}
			if bySeq[seq].Presence {
				missingPresence = true
			} else {
				missingOther = true
				newestDropped = seq
			}
		}
		for seq := after + 1; seq <= newestDropped; seq++ {
			if got[seq] {
				in.t.Fatalf("Read(%d, %d) = Seqs %v: Seq %d is kept though Seq %d (not a presence update) before it was dropped", after, limit, seqs(r.Updates), seq, newestDropped)
			}
		}
		if full {
			if r.Gap != missingOther || r.PresenceGap != missingPresence {
				in.t.Fatalf("Read(%d, %d) = Seqs %v: Gap %v, PresenceGap %v; want %v, %v", after, limit, seqs(r.Updates), r.Gap, r.PresenceGap, missingOther, missingPresence)
			}
		} else {
			if missingOther && !r.Gap || missingPresence && !r.PresenceGap {
				in.t.Fatalf("Read(%d, %d) = Seqs %v: Gap %v, PresenceGap %v; but within them other updates missing %v, presence updates missing %v", after, limit, seqs(r.Updates), r.Gap, r.PresenceGap, missingOther, missingPresence)
			}
			if r.Gap && !missingOther {
				// Dropped updates of the other kind all come before
				// every kept update: a Gap lies before Updates[0].
				in.t.Fatalf("Read(%d, %d) = Seqs %v: Gap, but nothing of the other kind is missing before them", after, limit, seqs(r.Updates))
			}
		}
	}
	// Never less than the model keeps.
	r, err := in.e.Read(ctx, hub.Position{Epoch: in.head.Epoch}, len(all)+1)
	if err != nil {
		in.t.Fatalf("Read(0): %v", err)
	}
	have := make(map[uint64]bool, len(r.Updates))
	for _, u := range r.Updates {
		have[u.Seq] = true
	}
	for _, u := range presenceModel(all, ret) {
		if !have[u.Seq] {
			in.t.Fatalf("Seq %d (presence %v) dropped, yet retention %+v keeps it; kept: %v", u.Seq, u.Presence, ret, seqs(r.Updates))
		}
	}
}
