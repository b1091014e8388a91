package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Conn says how to reach a Redis deployment; ParseURL makes one.
type Conn struct {
	// Topology names the deployment for the log: its kind and where it
	// is, without credentials.
	Topology string

	standalone *goredis.Options
	sentinel   *goredis.FailoverOptions
	cluster    *goredis.ClusterOptions
}

// ParseURL reads the address of a Redis deployment:
//
//	redis://[user:password@]host:port[/db]           one server
//	rediss://…                                        the same over TLS
//	redis://[user:password@]sentinel:port[/db]?master_name=NAME&addr=sentinel2:port…
//	                                                  Sentinel: the master named NAME
//	redis+cluster://[user:password@]host:port?addr=host2:port…
//	rediss+cluster://…                                Cluster, over TLS
//
// Query parameters set client options as go-redis reads them (dial_timeout,
// pool_size, …); the engine's own time bounds replace the timeouts.
func ParseURL(raw string) (*Conn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, password and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redis: bad url: %w", err)
	}
	c := &Conn{}
	switch u.Scheme {
	case "redis+cluster", "rediss+cluster":
		u.Scheme = strings.TrimSuffix(u.Scheme, "+cluster")
		o, err := goredis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redis: bad cluster url: %w", err)
		}
		c.cluster = o
		c.Topology = "cluster " + strings.Join(o.Addrs, ",") + tlsNote(o.TLSConfig != nil)
	case "redis", "rediss":
		if u.Query().Has("master_name") {
			o, err := goredis.ParseFailoverURL(u.String())
			if err != nil {
				return nil, fmt.Errorf("redis: bad sentinel url: %w", err)
			}
			c.sentinel = o
			c.Topology = fmt.Sprintf("sentinel master %q via %s db %d%s", o.MasterName, strings.Join(o.SentinelAddrs, ","), o.DB, tlsNote(o.TLSConfig != nil))
			break
		}
		o, err := goredis.ParseURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redis: bad url: %w", err)
		}
		c.standalone = o
		c.Topology = fmt.Sprintf("standalone %s db %d%s", o.Addr, o.DB, tlsNote(o.TLSConfig != nil))
	default:
		return nil, fmt.Errorf("redis: unknown scheme %q (use redis://, rediss://, redis+cluster:// or rediss+cluster://)", u.Scheme)
	}
	return c, nil
}

func tlsNote(on bool) string {
	if on {
		return " over TLS"
	}
	return ""
}

// client makes the go-redis client. Retries are off: an append retried
// after a timeout could be stored twice, and the engine retries reads
// itself. The read timeout leaves room for WAIT. Context deadlines are
// honoured, so that the look for an append whose answer was lost stays
// short.
func (c *Conn) client(timeout, wait time.Duration, workers int) goredis.UniversalClient {
	read := timeout + wait
	switch {
	case c.cluster != nil:
		o := *c.cluster
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, read, timeout, timeout
		o.MaxRetries, o.MaxRedirects = -1, 3
		o.ContextTimeoutEnabled = true
		o.MinIdleConns = workers + 2
		return goredis.NewClusterClient(&o)
	case c.sentinel != nil:
		o := *c.sentinel
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, read, timeout, timeout
		o.MaxRetries = -1
		o.ContextTimeoutEnabled = true
		o.MinIdleConns = workers + 2
		return goredis.NewFailoverClient(&o)
	default:
		o := *c.standalone
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, read, timeout, timeout
		o.MaxRetries = -1
		o.ContextTimeoutEnabled = true
		o.MinIdleConns = workers + 2
		return goredis.NewClient(&o)
	}
}

// RouteClientLog sends what the Redis client logs on its own (dial
// failures, pool events) to l at debug level, instead of to stderr: the
// engine already reports losing and finding Redis once, at warn. The
// client keeps one logger per process, so a program calls this once, from
// main.
func RouteClientLog(l *slog.Logger) { goredis.SetLogger(clientLog{l}) }

type clientLog struct{ l *slog.Logger }

func (c clientLog) Printf(ctx context.Context, format string, v ...any) {
	c.l.DebugContext(ctx, fmt.Sprintf(format, v...))
}
