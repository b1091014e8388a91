//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package stream

import (
	"testing"
	"time"
)

// TestProbe: the peek probe sees the client's close and reset.
func TestProbe(t *testing.T) {
	ln := listen(t)
	for _, reset := range []bool{false, true} {
		client, server := dialPair(t, ln)
		alive := newProbe(server)
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "byte arrives", func() bool {
			var b [1]byte
			_ = server.SetReadDeadline(time.Now().Add(time.Millisecond))
			n, _ := server.Read(b[:])
			return n == 1
		})
		if !alive() {
			t.Fatal("probe says gone while the client is there")
		}
		if reset {
			_ = client.SetLinger(0)
		}
		client.Close()
		waitUntil(t, "probe sees the client leave", func() bool { return !alive() })
	}
}
