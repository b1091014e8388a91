package sse

import (
	"strings"
	"testing"
)

func TestIndexBreak(t *testing.T) {
	for _, s := range []string{"", "abc", "\n", "\r", "\r\n", "a\nb\rc", "a\rb\nc", "long line with no break at all, long enough to be vectorised", strings.Repeat("x", 100) + "\r", strings.Repeat("y", 70) + "\n" + strings.Repeat("z", 70) + "\r"} {
		if got, want := indexBreak(s), strings.IndexAny(s, "\r\n"); got != want {
			t.Errorf("indexBreak(%q) = %d, want %d", s, got, want)
		}
		if got, want := hasBreak(s+"\x00"), true; got != want {
			t.Errorf("hasBreak(%q) = %v with a NUL", s, got)
		}
	}
	if hasBreak("plain") {
		t.Error("hasBreak(plain)")
	}
}
