package stream

import (
	"testing"
	"time"
)

// TestHangups: the kernel's hang-up report sets the flag, for a clean
// close and for a reset, and the waiting goroutine, counted by the
// tracker, ends with the last watch.
func TestHangups(t *testing.T) {
	ln := listen(t)
	for _, reset := range []bool{false, true} {
		var tr Tracker
		client, server := dialPair(t, ln)
		gone, stop, ok := tr.hangups.watch(&tr, server)
		if !ok {
			t.Fatal("watch refused a TCP connection")
		}
		if tr.own != 1 {
			t.Fatalf("watcher goroutine not counted: %d", tr.own)
		}
		// The client is still there: a byte it sends arrives, and the
		// flag, read after that, is still clear (readability is not
		// reported, only hang-ups).
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := server.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		if gone.Load() {
			t.Fatal("flag set while the client is there")
		}
		if reset {
			_ = client.SetLinger(0)
		}
		client.Close()
		waitUntil(t, "hang-up reported", gone.Load)
		stop()
		server.Close()
		// Shutdown with nothing tracked returns once the watcher is gone.
		ctx, cancel := contextWithTimeout(t, 5*time.Second)
		if err := tr.Shutdown(ctx, nil); err != nil {
			t.Fatalf("reset=%v: watcher goroutine still running after the last watch ended: %v", reset, err)
		}
		cancel()
		tr.Wait()
	}
}
