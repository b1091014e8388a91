package hub

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestUpdateCodec(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
	for _, u := range []*Update{
		{ID: "urn:uuid:1", Topics: []string{"https://example.com/a", "b"}, Private: true, Time: at, Frame: []byte("id: urn:uuid:1\ndata: x\n\n")},
		{ID: "x", Topics: []string{"t"}, Time: time.Unix(0, -5), Frame: []byte{}},
		{ID: "urn:uuid:2", Topics: []string{"/.well-known/mercure/subscriptions/a/b"}, Private: true, Presence: true, Time: at, Frame: []byte("data: {}\n\n")},
		{ID: "p", Topics: []string{"t"}, Presence: true, Time: at, Frame: []byte("data: {}\n\n")},
		{ID: "", Topics: []string{}, Time: time.Unix(0, 0), Frame: []byte("data:\n\n")},
	} {
		rec, err := u.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Update
		if err := got.UnmarshalBinary(rec); err != nil {
			t.Fatalf("%q: %v", u.ID, err)
		}
		if got.ID != u.ID || got.Private != u.Private || got.Presence != u.Presence || !got.Time.Equal(u.Time) ||
			!reflect.DeepEqual(got.Topics, u.Topics) || !bytes.Equal(got.Frame, u.Frame) {
			t.Errorf("round trip of %+v gave %+v", u, got)
		}
		id, tm, err := RecordHead(rec)
		if err != nil || string(id) != u.ID || !tm.Equal(u.Time) {
			t.Errorf("RecordHead of %q = %q, %v, %v", u.ID, id, tm, err)
		}
		if p := RecordPresence(rec); p != u.Presence {
			t.Errorf("RecordPresence of %q = %v, want %v", u.ID, p, u.Presence)
		}
	}
}

func TestUpdateCodecCorrupt(t *testing.T) {
	u := &Update{ID: "urn:uuid:1", Topics: []string{"a"}, Time: time.Unix(1, 0), Frame: []byte("data: x\n\n")}
	rec, _ := u.MarshalBinary()
	bad := map[string][]byte{
		"empty":          nil,
		"version":        append([]byte{9}, rec[1:]...),
		"time cut":       rec[:2],
		"no flags":       rec[:1+1],
		"id longer":      append(append([]byte{}, rec[:3]...), 0x7f, 'a'),
		"topics missing": rec[:3+1+len(u.ID)],
	}
	for name, b := range bad {
		var got Update
		if err := got.UnmarshalBinary(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: UnmarshalBinary = %v, want ErrCorrupt", name, err)
		}
		if name == "topics missing" {
			continue // the head is whole: RecordHead needs no more
		}
		if _, _, err := RecordHead(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: RecordHead = %v, want ErrCorrupt", name, err)
		}
	}
}

// FuzzUpdateCodec: decoding arbitrary bytes never panics, and whatever
// decodes has the head RecordHead reads and encodes back to the same update.
func FuzzUpdateCodec(f *testing.F) {
	for _, u := range []*Update{
		{ID: "urn:uuid:1", Topics: []string{"a", "b"}, Private: true, Time: time.Unix(5, 6), Frame: []byte("data: x\n\n")},
		{ID: "urn:uuid:2", Topics: []string{"a"}, Private: true, Presence: true, Time: time.Unix(5, 6), Frame: []byte("data: x\n\n")},
		{ID: "", Topics: nil, Time: time.Unix(0, 0)},
	} {
		rec, _ := u.MarshalBinary()
		f.Add(rec)
	}
	f.Add([]byte{1, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var u Update
		if err := u.UnmarshalBinary(data); err != nil {
			return
		}
		id, tm, err := RecordHead(data)
		if err != nil || string(id) != u.ID || !tm.Equal(u.Time) {
			t.Fatalf("decoded %+v, but RecordHead = %q, %v, %v", u, id, tm, err)
		}
		if RecordPresence(data) != u.Presence {
			t.Fatalf("decoded %+v, but RecordPresence = %v", u, !u.Presence)
		}
		rec, err := u.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again Update
		if err := again.UnmarshalBinary(rec); err != nil {
			t.Fatal(err)
		}
		if again.ID != u.ID || again.Private != u.Private || again.Presence != u.Presence || !again.Time.Equal(u.Time) ||
			!reflect.DeepEqual(again.Topics, u.Topics) || !bytes.Equal(again.Frame, u.Frame) {
			t.Fatalf("re-encoding %+v gave %+v", u, again)
		}
	})
}
