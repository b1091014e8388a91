package stream

import (
	"net"
	"testing"
	"time"
)

// BenchmarkBatch writes one frame per batch over loopback TCP the way the
// hub does (deadline, write, flush, lift), with the client draining:
//
//   - conn: a Conn, whose deadline is armed lazily;
//   - rearm: the bare connection, its deadline set and lifted every batch
//     (two timer operations per batch);
//   - bare: the bare connection with no deadline at all, the floor.
//
// The write system call is most of a batch and varies more than the
// deadline costs, so the "nowrite" variants keep the real connection for
// its deadlines (the runtime's timer operations) but drop the bytes: they
// show what the deadline handling itself costs per batch.
func BenchmarkBatch(b *testing.B) {
	for _, nowrite := range []bool{false, true} {
		name := "write"
		if nowrite {
			name = "nowrite"
		}
		b.Run(name, func(b *testing.B) { benchmarkBatch(b, nowrite) })
	}
}

// discardWrites is a connection whose writes go nowhere.
type discardWrites struct{ net.Conn }

func (discardWrites) Write(p []byte) (int, error) { return len(p), nil }

func benchmarkBatch(b *testing.B, nowrite bool) {
	frame := []byte("id: 0192a1c4-7b1e-7c3a-9f00-1234567890ab\ndata: {\"title\":\"Dune\",\"author\":\"Frank Herbert\",\"year\":1965,\"pages\":412}\n\n")
	run := func(b *testing.B, batch func(net.Conn) error) {
		ln := listen(b)
		client, server := dialPair(b, ln)
		done := drain(client)
		if nowrite {
			server = discardWrites{server}
		}
		b.SetBytes(int64(len(frame)))
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := batch(server); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		client.Close()
		<-done
	}
	b.Run("conn", func(b *testing.B) {
		var c *Conn
		run(b, func(nc net.Conn) error {
			if c == nil {
				c = &Conn{conn: nc}
			}
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(frame); err != nil {
				return err
			}
			if err := c.Flush(); err != nil {
				return err
			}
			return c.SetWriteDeadline(time.Time{})
		})
	})
	b.Run("rearm", func(b *testing.B) {
		run(b, func(nc net.Conn) error {
			_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := nc.Write(frame); err != nil {
				return err
			}
			return nc.SetWriteDeadline(time.Time{})
		})
	})
	b.Run("bare", func(b *testing.B) {
		run(b, func(nc net.Conn) error {
			_, err := nc.Write(frame)
			return err
		})
	})
}
