package mercure

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TestHangups: the kernel's hang-up report sets the flag, for a clean
// close and for a reset, and the waiting goroutine ends with the last
// watch.
func TestHangups(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var owner sync.WaitGroup
	w := &hangups{owner: &owner}
	for _, reset := range []bool{false, true} {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		gone, stop, ok := w.watch(server)
		if !ok {
			t.Fatal("watch refused a TCP connection")
		}
		time.Sleep(20 * time.Millisecond)
		if gone.Load() {
			t.Fatal("flag set while the client is there")
		}
		if reset {
			_ = client.(*net.TCPConn).SetLinger(0)
		}
		client.Close()
		deadline := time.Now().Add(5 * time.Second)
		for !gone.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("reset=%v: hang-up not reported", reset)
			}
			time.Sleep(time.Millisecond)
		}
		stop()
		server.Close()
		done := make(chan struct{})
		go func() { owner.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("watcher goroutine still running after the last watch ended")
		}
	}
}
