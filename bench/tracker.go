package bench

// maxGap bounds how far ahead of the highest sequence number seen an
// arrival may jump. A hub sending garbage could otherwise make the tracker
// record billions of missing numbers.
const maxGap = 1 << 22

// tracker checks one stream's sequence numbers as one subscriber receives
// them. It keeps the highest number seen and the set of numbers below it
// that have not arrived: a later arrival of one of those is out of order,
// an arrival of anything else at or below the highest is a duplicate.
// What is still missing at the end, and whatever was published beyond the
// highest, is lost. Not safe for concurrent use.
type tracker struct {
	highest uint64
	missing map[uint64]struct{}
}

// verdict is what one arrival was.
type verdict uint8

const (
	inOrder verdict = iota
	outOfOrder
	duplicate
	implausible // beyond maxGap, or zero: not counted as a delivery of the stream
)

func (t *tracker) see(seq uint64) verdict {
	switch {
	case seq == 0 || seq > t.highest+maxGap:
		return implausible
	case seq == t.highest+1:
		t.highest = seq
		return inOrder
	case seq > t.highest:
		if t.missing == nil {
			t.missing = make(map[uint64]struct{})
		}
		for s := t.highest + 1; s < seq; s++ {
			t.missing[s] = struct{}{}
		}
		t.highest = seq
		return inOrder
	}
	if _, ok := t.missing[seq]; ok {
		delete(t.missing, seq)
		return outOfOrder
	}
	return duplicate
}

// lost counts the numbers in 1..last that never arrived, leaving out
// those in failed (publishes that were not acknowledged: the hub may or
// may not have them, so neither outcome is a fault).
func (t *tracker) lost(last uint64, failed map[uint64]bool) int64 {
	var n int64
	for s := range t.missing {
		if s <= last && !failed[s] {
			n++
		}
	}
	for s := t.highest + 1; s <= last; s++ {
		if !failed[s] {
			n++
		}
	}
	return n
}
