package bolt

import "github.com/herald-hub/herald/hub"

// tail is the records in the journal but not yet in the tree, in Seq order
// without gaps, with an index of their ids. The engine guards it with a
// lock. Entries are never modified once added, so a reader may keep the
// slice that entries returned while the tail moves on.
type tail struct {
	entries []entry
	bytes   int
	ids     map[string]tailID
}

// entry is a journaled update not yet in the tree.
type entry struct {
	u   *hub.Update
	rec []byte
}

// tailID is where an id first appears in the tail, and how often.
type tailID struct {
	first uint64
	n     int
}

// add appends entries, whose Seqs follow the last one's.
func (t *tail) add(batch []*request) {
	if t.ids == nil {
		t.ids = make(map[string]tailID)
	}
	for _, r := range batch {
		t.entries = append(t.entries, entry{u: r.u, rec: r.rec})
		t.bytes += len(r.rec)
		id := t.ids[r.u.ID]
		if id.n == 0 {
			id.first = r.u.Seq
		}
		id.n++
		t.ids[r.u.ID] = id
	}
}

// drop removes the first n entries, which the tree now holds.
func (t *tail) drop(n int) {
	gone, rest := t.entries[:n], t.entries[n:]
	for _, en := range gone {
		t.bytes -= len(en.rec)
		id := t.ids[en.u.ID]
		if id.n--; id.n == 0 {
			delete(t.ids, en.u.ID)
			continue
		}
		if id.first == en.u.Seq {
			// The id comes again later (rare: ids are meant to be
			// unique): find where.
			for _, later := range rest {
				if later.u.ID == en.u.ID {
					id.first = later.u.Seq
					break
				}
			}
		}
		t.ids[en.u.ID] = id
	}
	t.entries = rest
	if len(rest) == 0 {
		t.entries = nil // let the backing array go
	}
}

// first returns the Seq of the earliest entry with id.
func (t *tail) first(id string) (uint64, bool) {
	v, ok := t.ids[id]
	return v.first, ok
}

// after returns the entries whose Seq is greater than seq.
func (t *tail) after(seq uint64) []entry {
	es := t.entries
	if len(es) > 0 && seq >= es[0].u.Seq {
		es = es[min(seq-es[0].u.Seq+1, uint64(len(es))):]
	}
	return es
}

// last returns the Seq of the last entry, or zero.
func (t *tail) last() uint64 {
	if len(t.entries) == 0 {
		return 0
	}
	return t.entries[len(t.entries)-1].u.Seq
}
