package hub

import (
	"encoding/binary"
	"errors"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Update is one published update as the hub and the engines see it: its
// routing facts and its SSE frame, encoded once and shared read-only by every
// subscriber. An Update must not be modified after it is handed to an engine.
type Update struct {
	// Seq is the update's position in the log, assigned by Engine.Append:
	// starting at 1, each successful append takes the last Seq plus one (a
	// failed append takes none), and a Seq is never reused, even once
	// retention has emptied the log.
	Seq uint64
	// ID is the event id: the publisher's, or one the hub generated. It is
	// the cursor subscribers send back as Last-Event-ID. It never contains
	// NUL and is at most a few KiB long (the mercure layer enforces both).
	ID string
	// Topics holds the canonical topic first, then the alternate topics.
	Topics []string
	// Private updates go only to subscribers authorized for one of Topics.
	Private bool
	// Presence marks an update that tells who is listening (a subscription
	// event) rather than carrying an application's data. Engines retain
	// presence updates apart from the others (Retention.MaxPresence), so
	// that a churn of subscribers never pushes application updates out of
	// the history.
	Presence bool
	// Time is when the hub accepted the update; retention by age uses it.
	Time time.Time
	// Frame is the complete SSE frame, ending with the blank line.
	Frame []byte

	// span is the span context the dispatcher's span descends from: set
	// by Publish, before Append, when the hub traces and the publish is
	// sampled. It lives in memory only, so an update that comes back from
	// the engine's storage (a replay, a catch-up read, another node's
	// update through a shared feed) has none and gets no dispatch span.
	// A pointer, so that an update of a hub that does not trace costs one
	// word more, not a whole span context.
	span *trace.SpanContext
}

// size is what the update costs in a subscriber queue.
func (u *Update) size() int { return len(u.Frame) + 64 }

// codecVersion prefixes every encoded update so that the format can evolve.
const codecVersion = 1

// Bits of the flags byte of an encoded update. Records written before a
// bit existed have it clear.
const (
	flagPrivate  = 1 << 0
	flagPresence = 1 << 1
)

// ErrCorrupt reports an encoded update that cannot be decoded.
var ErrCorrupt = errors.New("hub: corrupt update record")

// MarshalBinary encodes everything but Seq, which engines store as the key.
// Engines share this format so that a record written by one version of
// herald is read by the next.
func (u *Update) MarshalBinary() ([]byte, error) {
	n := 1 + binary.MaxVarintLen64*3 + len(u.ID) + 1 + binary.MaxVarintLen64*(1+len(u.Topics)) + len(u.Frame)
	for _, t := range u.Topics {
		n += len(t)
	}
	b := make([]byte, 0, n)
	b = append(b, codecVersion)
	b = binary.AppendVarint(b, u.Time.UnixNano())
	flags := byte(0)
	if u.Private {
		flags |= flagPrivate
	}
	if u.Presence {
		flags |= flagPresence
	}
	b = append(b, flags)
	b = appendString(b, u.ID)
	b = binary.AppendUvarint(b, uint64(len(u.Topics)))
	for _, t := range u.Topics {
		b = appendString(b, t)
	}
	return append(b, u.Frame...), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// UnmarshalBinary decodes a record written by MarshalBinary. It copies what
// it keeps, so data may be reused by the caller afterwards.
func (u *Update) UnmarshalBinary(data []byte) error {
	if len(data) < 1 || data[0] != codecVersion {
		return ErrCorrupt
	}
	d := data[1:]
	ns, n := binary.Varint(d)
	if n <= 0 || len(d) < n+1 {
		return ErrCorrupt
	}
	d = d[n:]
	u.Time = time.Unix(0, ns)
	u.Private = d[0]&flagPrivate != 0
	u.Presence = d[0]&flagPresence != 0
	d = d[1:]
	var err error
	if u.ID, d, err = readString(d); err != nil {
		return err
	}
	count, n := binary.Uvarint(d)
	if n <= 0 || count > uint64(len(d)) {
		return ErrCorrupt
	}
	d = d[n:]
	u.Topics = make([]string, count)
	for i := range u.Topics {
		if u.Topics[i], d, err = readString(d); err != nil {
			return err
		}
	}
	u.Frame = append([]byte(nil), d...)
	return nil
}

// RecordHead returns the ID and Time of an update encoded by
// MarshalBinary without decoding the rest: engines that trim their history
// by age need no more, and the id aliases data.
func RecordHead(data []byte) (id []byte, t time.Time, err error) {
	if len(data) < 1 || data[0] != codecVersion {
		return nil, time.Time{}, ErrCorrupt
	}
	d := data[1:]
	ns, n := binary.Varint(d)
	if n <= 0 || len(d) < n+1 {
		return nil, time.Time{}, ErrCorrupt
	}
	d = d[n+1:] // the time, then the flags byte
	l, n := binary.Uvarint(d)
	if n <= 0 || l > uint64(len(d)-n) {
		return nil, time.Time{}, ErrCorrupt
	}
	return d[n : n+int(l)], time.Unix(0, ns), nil
}

// RecordPresence reports whether an update encoded by MarshalBinary is a
// presence update, without decoding the rest. It is false for a record it
// cannot read.
func RecordPresence(data []byte) bool {
	if len(data) < 1 || data[0] != codecVersion {
		return false
	}
	_, n := binary.Varint(data[1:])
	if n <= 0 || len(data) < 1+n+1 {
		return false
	}
	return data[1+n]&flagPresence != 0
}

func readString(d []byte) (string, []byte, error) {
	l, n := binary.Uvarint(d)
	if n <= 0 || l > uint64(len(d)-n) {
		return "", nil, ErrCorrupt
	}
	return string(d[n : n+int(l)]), d[n+int(l):], nil
}
