package sse_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/herald-hub/herald/sse"
)

func TestEncode(t *testing.T) {
	cases := []struct {
		name string
		ev   sse.Event
		want string
	}{
		{"data only", sse.Event{Data: "hello"}, "data: hello\n\n"},
		{"empty data", sse.Event{ID: "1"}, "id: 1\ndata: \n\n"},
		{"all fields", sse.Event{ID: "urn:x", Type: "book", Retry: "3000", Data: "x"}, "event: book\nretry: 3000\nid: urn:x\ndata: x\n\n"},
		{"LF", sse.Event{Data: "a\nb"}, "data: a\ndata: b\n\n"},
		{"CRLF", sse.Event{Data: "a\r\nb"}, "data: a\ndata: b\n\n"},
		{"CR", sse.Event{Data: "a\rb"}, "data: a\ndata: b\n\n"},
		{"trailing LF", sse.Event{Data: "a\n"}, "data: a\ndata: \n\n"},
		{"injection stays data", sse.Event{Data: "x\nid: forged\nevent: mercure"}, "data: x\ndata: id: forged\ndata: event: mercure\n\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := sse.Encode(&c.ev)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
			if cap(got) != len(got) {
				t.Fatalf("EncodedLen is off: cap %d, len %d", cap(got), len(got))
			}
		})
	}
}

func TestEncodeRefusesInjection(t *testing.T) {
	for _, ev := range []sse.Event{
		{ID: "a\nb"}, {ID: "a\rb"}, {ID: "a\x00b"}, {Type: "x\ny"}, {Retry: "12a"}, {Retry: "-1"},
	} {
		if _, err := sse.Encode(&ev); err == nil {
			t.Errorf("%+v encoded", ev)
		}
	}
}

func TestReaderFollowsTheStandard(t *testing.T) {
	in := "\xEF\xBB\xBF: comment\r\n" +
		"id: 1\r\nevent: a\r\ndata: x\r\ndata:y\r\n\r\n" + // CRLF, no space after colon
		"data: lone\rid: 2\r\r" + // CR endings
		"id: 3\n\n" + // id without data: no event, but the id sticks
		"retry: 10\ndata: z\n\n" +
		"id: bad\x00\ndata: w\n\n" + // id with NUL is ignored
		"data: unterminated"
	r := sse.NewReader(strings.NewReader(in))
	want := []sse.Event{
		{ID: "1", Type: "a", Data: "x\ny"},
		{ID: "2", Data: "lone"},
		{ID: "3", Data: "z", Retry: "10"},
		{ID: "3", Data: "w"},
	}
	for i, w := range want {
		ev, err := r.Next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev != w {
			t.Fatalf("event %d: got %+v, want %+v", i, ev, w)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("unterminated event: got %v", err)
	}
}

func TestAppendComment(t *testing.T) {
	if got := string(sse.AppendComment(nil, "a\nb")); got != ": a b\n\n" {
		t.Fatalf("got %q", got)
	}
}

// TestHeartbeat: the heartbeat is the empty comment, a constant no
// importer can change, and a reader passes over it: it dispatches no event
// and does not disturb the events around it.
func TestHeartbeat(t *testing.T) {
	if got := string(sse.AppendComment(nil, "")); sse.Heartbeat != got {
		t.Fatalf("Heartbeat %q, the empty comment is %q", sse.Heartbeat, got)
	}
	r := sse.NewReader(strings.NewReader(sse.Heartbeat + "id: 1\ndata: x\n\n" + sse.Heartbeat + sse.Heartbeat + "data: y\n\n" + sse.Heartbeat))
	var got []sse.Event
	for {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		got = append(got, ev)
	}
	if fmt.Sprint(got) != fmt.Sprint([]sse.Event{{ID: "1", Data: "x"}, {ID: "1", Data: "y"}}) {
		t.Fatalf("got %+v, want the two events alone (the id carries over)", got)
	}
}

// FuzzRoundTrip checks that any event the encoder accepts parses back to
// itself (data with CR and CRLF normalized to LF) and that the parser
// never sees more than one event in one frame.
func FuzzRoundTrip(f *testing.F) {
	f.Add("1", "type", "data\nmore", "100")
	f.Add("", "", "", "")
	f.Add("id", "", "a\r\nb\rc\n", "")
	f.Add("x", "y", "\nid: forged\n\n", "5")
	f.Fuzz(func(t *testing.T, id, typ, data, retry string) {
		ev := sse.Event{ID: id, Type: typ, Data: data, Retry: retry}
		frame, err := sse.Encode(&ev)
		if err != nil {
			return
		}
		r := sse.NewReader(strings.NewReader(string(frame)))
		got, err := r.Next()
		if err != nil {
			t.Fatalf("frame %q: %v", frame, err)
		}
		norm := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(data)
		wantID := id
		if strings.ContainsRune(id, 0) {
			wantID = ""
		}
		wantType := typ
		if got.ID != wantID || got.Type != wantType || got.Data != norm || got.Retry != retry {
			t.Fatalf("frame %q parsed to %+v", frame, got)
		}
		if _, err := r.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("frame %q holds more than one event", frame)
		}
	})
}

// FuzzReader feeds arbitrary bytes to the parser: it must not panic and
// must end.
func FuzzReader(f *testing.F) {
	f.Add([]byte("data: x\n\n"))
	f.Add([]byte("\r\r\n\n:\nid\nretry: 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := sse.NewReader(strings.NewReader(string(b)))
		for range len(b) + 1 {
			if _, err := r.Next(); err != nil {
				return
			}
		}
		t.Fatalf("more events than bytes")
	})
}

func BenchmarkEncode(b *testing.B) {
	ev := sse.Event{ID: "urn:uuid:e1ee88e2-532a-4d6f-ba70-f0f8bd584022", Data: strings.Repeat("x", 100)}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = sse.AppendEvent(buf[:0], &ev)
	}
}

func BenchmarkEncodeMultiline(b *testing.B) {
	ev := sse.Event{ID: "1", Type: "update", Data: strings.Repeat("line of json\n", 20)}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = sse.AppendEvent(buf[:0], &ev)
	}
}

// BenchmarkEncodeBaseline is the obvious encoder: fmt for the fields and
// strings.Split for the data lines.
func BenchmarkEncodeBaseline(b *testing.B) {
	ev := sse.Event{ID: "urn:uuid:e1ee88e2-532a-4d6f-ba70-f0f8bd584022", Data: strings.Repeat("x", 100)}
	var sb strings.Builder
	b.ReportAllocs()
	for b.Loop() {
		sb.Reset()
		if ev.Type != "" {
			fmt.Fprintf(&sb, "event: %s\n", ev.Type)
		}
		fmt.Fprintf(&sb, "id: %s\n", ev.ID)
		for _, l := range strings.Split(ev.Data, "\n") {
			fmt.Fprintf(&sb, "data: %s\n", l)
		}
		sb.WriteString("\n")
		_ = []byte(sb.String())
	}
}

func TestRetryWithoutEvent(t *testing.T) {
	r := sse.NewReader(strings.NewReader(": bye\nretry: 1000\n\n"))
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("got %v", err)
	}
	if r.Retry() != "1000" {
		t.Fatalf("Retry() = %q", r.Retry())
	}
}
