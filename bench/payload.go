package bench

import (
	"strconv"
	"strings"
)

// An update's data starts with a header the subscribers parse:
//
//	hb1 k=TOPIC p=PUBLISHER s=SEQ t=UNIXNANO .
//
// padded with 'x' to the payload size. SEQ counts the updates of one
// stream, a (topic, publisher) pair, from 1: one publisher publishes a
// stream's updates one after the other, so the hub must deliver them in
// that order. Two publishers on one topic are two streams, since the order
// of concurrent publishes is the hub's to choose.
const payloadMagic = "hb1 "

// Stream names the updates of one publisher on one topic: the unit whose
// order a hub must keep.
type Stream struct {
	Topic     int `json:"k"`
	Publisher int `json:"p"`
}

// appendPayload builds the data of update seq of stream st sent at unix
// nanosecond t, padded to size bytes (the header alone when it is longer).
func appendPayload(dst []byte, st Stream, seq uint64, t int64, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadMagic...)
	dst = append(dst, "k="...)
	dst = strconv.AppendInt(dst, int64(st.Topic), 10)
	dst = append(dst, " p="...)
	dst = strconv.AppendInt(dst, int64(st.Publisher), 10)
	dst = append(dst, " s="...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, " t="...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, " ."...)
	for len(dst)-start < size {
		dst = append(dst, 'x')
	}
	return dst
}

// parsePayload reads the header of a bench update without allocating.
func parsePayload(data string) (st Stream, seq uint64, t int64, ok bool) {
	rest, ok := strings.CutPrefix(data, payloadMagic)
	if !ok {
		return st, 0, 0, false
	}
	var k, p, s, tt uint64
	if rest, ok = field(rest, "k=", &k); !ok {
		return st, 0, 0, false
	}
	if rest, ok = field(rest, "p=", &p); !ok {
		return st, 0, 0, false
	}
	if rest, ok = field(rest, "s=", &s); !ok {
		return st, 0, 0, false
	}
	if _, ok = field(rest, "t=", &tt); !ok {
		return st, 0, 0, false
	}
	if k > 1<<30 || p > 1<<30 || tt > 1<<62 {
		return st, 0, 0, false
	}
	return Stream{Topic: int(k), Publisher: int(p)}, s, int64(tt), true
}

// field parses "name=DIGITS " at the start of s.
func field(s, name string, v *uint64) (string, bool) {
	s, ok := strings.CutPrefix(s, name)
	if !ok {
		return s, false
	}
	var n uint64
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if n > (1<<63)/10 {
			return s, false
		}
		n = n*10 + uint64(s[i]-'0')
	}
	if i == 0 || i == len(s) || s[i] != ' ' {
		return s, false
	}
	*v = n
	return s[i+1:], true
}
