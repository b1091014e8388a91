package redis

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// redisAddrEnv passes the test server's address to the crash test's child.
const redisAddrEnv = "HERALD_TEST_REDIS_ADDR"

func startRedis(t testing.TB) string {
	t.Helper()
	if a := os.Getenv(redisAddrEnv); a != "" {
		return a
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("redis did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addr
}

// prefixFor maps an enginetest dir to a key prefix: the same dir reopens
// the same log, another dir is another log.
func prefixFor(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return "t" + hex.EncodeToString(h[:8])
}

func factory(addr string) enginetest.Factory {
	return func(t testing.TB, dir string, r hub.Retention) hub.Engine {
		e, err := Open(t.Context(), "redis://"+addr+"/0", Options{Retention: r, Prefix: prefixFor(dir), Grace: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
}

func TestConformance(t *testing.T) {
	addr := startRedis(t)
	enginetest.Run(t, factory(addr), enginetest.Options{
		Durable: true,
		Replace: func(t testing.TB, e hub.Engine) {
			// What a Redis restarted without its data looks like.
			k := e.(*Engine).keys
			if err := e.(*Engine).rdb.Del(t.Context(), k.meta, k.log, k.ids, k.dups).Err(); err != nil {
				t.Fatal(err)
			}
		},
	})
}

func TestCrash(t *testing.T) {
	addr := startRedis(t)
	t.Setenv(redisAddrEnv, addr)
	enginetest.RunCrash(t, factory(addr))
}
