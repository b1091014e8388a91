package listener

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The clients come from 127.0.0.1 to 127.0.0.3: all of 127/8 is loopback
// on Linux.
// TestRandomizedOpenClose runs clients that connect and hang up at random
// against a server that closes, sometimes twice at once, what it accepts.
// The open count must never pass the caps, must match what clients saw,
// and must come back to zero.
func TestRandomizedOpenClose(t *testing.T) {
	for _, sockets := range []int{1, 3} {
		t.Run("sockets="+strconv.Itoa(sockets), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			if v := os.Getenv("LISTENER_SEED"); v != "" {
				seed, _ = strconv.ParseUint(v, 10, 64)
			}
			t.Logf("seed %d (LISTENER_SEED=%d reproduces the choices)", seed, seed)
			const maxConns, perIP = 6, 4
			const clients, rounds = 6, 30
			reg := prometheus.NewRegistry()
			l := listen(t, Config{MaxConns: maxConns, MaxConnsPerIP: perIP, ReusePort: sockets, Registerer: reg})

			var srvRngMu sync.Mutex
			srvRng := rand.New(rand.NewPCG(seed, clients))
			coin := func() bool {
				srvRngMu.Lock()
				defer srvRngMu.Unlock()
				return srvRng.IntN(2) == 0
			}
			var over atomic.Value
			var srv sync.WaitGroup
			srv.Go(func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					l.mu.Lock()
					open, ipOpen := l.open, l.perIP[c.(*conn).ip]
					l.mu.Unlock()
					if open > maxConns || ipOpen > perIP {
						over.Store("open " + strconv.Itoa(open) + ", from one address " + strconv.Itoa(ipOpen))
					}
					srv.Go(func() {
						// Tell the client it is in, wait for it to hang up, close.
						_, _ = c.Write([]byte{'A'})
						_ = c.SetReadDeadline(time.Now().Add(waitFor))
						_, _ = io.Copy(io.Discard, c)
						if coin() {
							var both sync.WaitGroup
							both.Go(func() { _ = c.Close() })
							both.Go(func() { _ = c.Close() })
							both.Wait()
						} else {
							_ = c.Close()
						}
					})
				}
			})

			var admitted, refusedN atomic.Int64
			var cli sync.WaitGroup
			for g := range clients {
				rng := rand.New(rand.NewPCG(seed, uint64(g)))
				cli.Go(func() {
					for range rounds {
						from := "127.0.0." + strconv.Itoa(1+rng.IntN(3))
						d := net.Dialer{Timeout: waitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
						c, err := d.Dial("tcp", l.Addr().String())
						if errors.Is(err, syscall.ECONNRESET) {
							refusedN.Add(1) // reset before the dial returned
							continue
						}
						if err != nil {
							t.Error(err)
							return
						}
						_ = c.SetReadDeadline(time.Now().Add(waitFor))
						var b [1]byte
						_, err = c.Read(b[:])
						var ne net.Error
						switch {
						case err == nil:
							admitted.Add(1)
							for range rng.IntN(4) {
								time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
							}
						case errors.As(err, &ne) && ne.Timeout():
							t.Error("a connection was neither admitted nor refused")
						default:
							refusedN.Add(1)
						}
						_ = c.Close()
					}
				})
			}
			cli.Wait()
			eventually(t, "open connections back to 0", func() bool { return l.Open() == 0 })
			if v := over.Load(); v != nil {
				t.Fatalf("a cap was passed: %v", v)
			}
			if a, r := admitted.Load(), refusedN.Load(); a+r != clients*rounds || a == 0 {
				t.Fatalf("admitted %d + refused %d, want %d with some admitted", a, r, clients*rounds)
			}
			acc := mustMetric(t, reg, "listener_accepted_total")
			ref := mustMetric(t, reg, "listener_refused_total", "reason", "limit") +
				mustMetric(t, reg, "listener_refused_total", "reason", "per_ip")
			if int64(acc) != admitted.Load() || int64(ref) != refusedN.Load() {
				t.Fatalf("metrics say %v accepted, %v refused; clients saw %d and %d", acc, ref, admitted.Load(), refusedN.Load())
			}
			if got := mustMetric(t, reg, "listener_open_connections"); got != 0 {
				t.Fatalf("open_connections = %v at the end", got)
			}
			t.Logf("admitted %d, refused %d", admitted.Load(), refusedN.Load())
			_ = l.Close()
			srv.Wait()
		})
	}
}
