package sse

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// refLines splits s the plain way: at each CR, LF or CRLF.
func refLines(s string) []string {
	var out []string
	for {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]
	}
}

func walkLines(s string) []string {
	var out []string
	lf := strings.IndexByte(s, '\n')
	for {
		line, rest, next, ok := nextLine(s, lf)
		out = append(out, line)
		if !ok {
			return out
		}
		if want := strings.IndexByte(rest, '\n'); next != want {
			panic("nextLine lost track of the next LF")
		}
		s, lf = rest, next
	}
}

// TestNextLine: the walk splits exactly as the plain splitter does, on
// edge cases and on random strings of text, CRs and LFs.
func TestNextLine(t *testing.T) {
	cases := []string{"", "abc", "\n", "\r", "\r\n", "\n\r", "\r\r\n\n", "a\nb\rc", "a\rb\nc", "a\r\nb\r\nc\r", strings.Repeat("x", 100) + "\r", strings.Repeat("y", 70) + "\n" + strings.Repeat("z", 70) + "\r"}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		b := make([]byte, rng.IntN(48))
		for i := range b {
			b[i] = "ab\r\n"[rng.IntN(4)]
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		if got, want := walkLines(s), refLines(s); !slices.Equal(got, want) {
			t.Fatalf("lines of %q: %q, want %q", s, got, want)
		}
	}
	for _, s := range []string{"plain", ""} {
		if hasBreak(s) {
			t.Errorf("hasBreak(%q)", s)
		}
	}
	for _, s := range []string{"a\rb", "a\nb", "a\x00b"} {
		if !hasBreak(s) {
			t.Errorf("hasBreak(%q) = false", s)
		}
	}
}

// TestEncodeManyCRs: a megabyte of CRs is a megabyte of empty data lines.
// (Rescanning for LF from every CR made this quadratic: seconds per call.)
func TestEncodeManyCRs(t *testing.T) {
	const n = 1 << 20
	e := &Event{Data: strings.Repeat("\r", n) + "x"}
	frame := AppendEvent(nil, e)
	want := (n)*len("data: \n") + len("data: x\n") + 1
	if len(frame) != want || EncodedLen(e) != want {
		t.Fatalf("frame %d bytes, EncodedLen %d, want %d", len(frame), EncodedLen(e), want)
	}
}
