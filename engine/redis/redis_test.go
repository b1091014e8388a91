package redis

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-hub/herald/engine/enginetest"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/internal/redistest"
)

func TestMain(m *testing.M) {
	// The client's own complaints (dial failures while a test has Redis
	// stopped) would bury a failure's output.
	RouteClientLog(slog.New(slog.DiscardHandler))
	// go-redis retries a failed dial from a goroutine of its own, which
	// sees a closed client only when it wakes, up to a second later.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// redisAddrEnv passes the test server's address to the crash test's child.
const redisAddrEnv = "HERALD_TEST_REDIS_ADDR"

// startRedis starts a redis-server for the test, or, in the crash test's
// child, returns the parent's.
func startRedis(t testing.TB) string {
	t.Helper()
	if a := os.Getenv(redisAddrEnv); a != "" {
		return a
	}
	return redistest.Start(t, redistest.Options{}).Addr()
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
			if err := e.(*Engine).rdb.Del(t.Context(), k.trimmed()...).Err(); err != nil {
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
