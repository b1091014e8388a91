package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/herald-hub/herald/admin"
	"github.com/herald-hub/herald/console"
	"github.com/herald-hub/herald/engine/bolt"
	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/engine/redis"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
	"github.com/herald-hub/herald/server"
	"github.com/herald-hub/herald/stream"
)

// serveConfig holds every serve flag. Each flag also reads HERALD_<FLAG>
// from the environment and a "flag value" line from the --config file.
type serveConfig struct {
	addr, adminAddr, dataDir, engine, redisPrefix        string
	redisWait                                            int
	redisWaitTimeout                                     time.Duration
	jwtKey, pubKey, subKey, jwtAlg, jwtIssuer, publicURL string
	anonymous, h2c, randomIDs                            bool
	corsOrigins, protocols, writeDelay                   string
	heartbeat, historyMaxAge, writeTimeout, shutdown     time.Duration
	maxLifetime                                          time.Duration
	historySize, queueBytes, subscriptionsHistory        int
	maxPatterns, maxPatternsSubject, maxPatternsSub      int
	maxBody                                              int64
	tlsCert, tlsKey, logFormat, logLevel                 string
	maxStreamsSub, publishBurst                          int
	publishRate                                          float64
	maxConns                                             string
	maxConnsPerIP, connectBurst, acceptSockets, maxSubs  int
	connectRate                                          float64
	trustedProxies                                       string
	overloadLag, overloadWait                            time.Duration
	subscriptions, ui                                    bool
	nodeName                                             string
	nodeLease                                            time.Duration
	subscriptionsGrace                                   time.Duration
}

func serveFlags(c *serveConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "localhost:3000", "listen address")
	fs.StringVar(&c.adminAddr, "admin-addr", "", "address for pprof, metrics and health (off when empty; keep it private)")
	fs.StringVar(&c.dataDir, "data-dir", "./herald-data", "directory of the embedded history")
	fs.StringVar(&c.engine, "engine", "bolt", "history engine: bolt (embedded, durable), memory, or the URL of a Redis shared by several nodes (redis://, rediss://, with ?master_name= for Sentinel, redis+cluster://)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", redis.DefaultPrefix, "key prefix of this hub's history in Redis, so several hubs share one Redis")
	fs.IntVar(&c.redisWait, "redis-wait", 0, "replicas that must confirm an update (Redis WAIT) before a publish is acknowledged; 0 means the master alone")
	fs.DurationVar(&c.redisWaitTimeout, "redis-wait-timeout", redis.DefaultWaitTimeout, "how long a publish waits for --redis-wait replicas before it is refused with 503")
	fs.StringVar(&c.jwtKey, "jwt-key", "", "key for publisher and subscriber tokens: a secret, a PEM key, or @file")
	fs.StringVar(&c.pubKey, "publisher-jwt-key", "", "key for publisher tokens (overrides --jwt-key)")
	fs.StringVar(&c.subKey, "subscriber-jwt-key", "", "key for subscriber tokens (overrides --jwt-key)")
	fs.StringVar(&c.jwtAlg, "jwt-alg", "", "accepted signing algorithms, comma-separated (default from the key type: HS256, RS256, ES256 or EdDSA)")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "herald", "trusted iss of draft-08 tokens")
	fs.StringVar(&c.publicURL, "public-url", "", "the hub URL clients use, and the aud tokens must name (default http://<addr>/.well-known/mercure)")
	fs.BoolVar(&c.anonymous, "anonymous", false, "let subscribers in without a token (public updates only)")
	fs.StringVar(&c.corsOrigins, "cors-origins", "", "origins allowed from browsers, comma-separated; * for any origin without credentials")
	fs.StringVar(&c.protocols, "protocols", "7,8", "Mercure drafts to speak: 7, 8 or 7,8")
	fs.DurationVar(&c.heartbeat, "heartbeat", 15*time.Second, "idle time before a keep-alive comment; 0 disables")
	fs.IntVar(&c.historySize, "history-size", 100_000, "updates kept for resume; 0 means no count limit")
	fs.DurationVar(&c.historyMaxAge, "history-max-age", 24*time.Hour, "age after which updates leave the history; 0 means no age limit")
	fs.IntVar(&c.maxPatterns, "max-patterns", hub.DefaultMaxPatterns, "distinct URL patterns and URI templates all subscriptions may hold together; over it a subscribe gets 429; -1 means no limit")
	fs.IntVar(&c.maxPatternsSubject, "max-patterns-per-subject", hub.DefaultMaxPatternsPerSubject, "distinct patterns the subscriptions of one token sub may hold (anonymous subscribers count as one); over it 429; -1 means no limit")
	fs.IntVar(&c.maxPatternsSub, "max-patterns-per-subscription", mercure.DefaultMaxPatterns, "distinct patterns one subscription may carry; over it 400")
	fs.IntVar(&c.queueBytes, "queue-bytes", 4<<20, "per-subscriber queue budget; a subscriber over it is disconnected and resumes")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "deadline of every write to a subscriber")
	fs.StringVar(&c.writeDelay, "write-delay", "auto", "least time between two writes to one stream, updates coming sooner waiting to share one write: auto (set by load, up to 50ms), a fixed duration, or 0 to write at once")
	fs.DurationVar(&c.maxLifetime, "max-lifetime", 0, "close subscriptions older than this so clients re-authenticate; 0 means no limit")
	fs.Int64Var(&c.maxBody, "max-body", 1<<20, "largest publish body in bytes")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", 10*time.Second, "grace period at shutdown for in-flight publishes and closing streams")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "TLS certificate file (enables HTTPS and HTTP/2)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "TLS key file")
	fs.BoolVar(&c.h2c, "h2c", false, "also accept cleartext HTTP/2 (prior knowledge)")
	fs.BoolVar(&c.randomIDs, "random-ids", false, "generate random update ids (UUIDv4) that reveal nothing, instead of time-ordered ones (UUIDv7); durable publishing is slower")
	fs.StringVar(&c.maxConns, "max-connections", "auto", "open client connections at most; past nine tenths new subscriptions are sent away with a retry hint, at the cap connections are reset: auto (nine tenths of the open-files limit), 0 for no limit, or a count")
	fs.IntVar(&c.maxConnsPerIP, "max-connections-per-ip", 0, "open connections one client address may hold; past it connections are reset; 0 means no limit")
	fs.Float64Var(&c.connectRate, "connect-rate", 0, "new connections accepted per second, on average; past it they are reset; 0 means no limit")
	fs.IntVar(&c.connectBurst, "connect-burst", 0, "new connections accepted at once within --connect-rate (default: the rate, at least 1)")
	fs.IntVar(&c.acceptSockets, "accept-sockets", 1, "listening sockets sharing the address (SO_REUSEPORT, Linux), each with its own accept loop")
	fs.IntVar(&c.maxSubs, "max-subscribers", 0, "open subscriptions on this node at most, HTTP/2 streams included (one connection may carry many); one more is sent away with a retry hint; 0 means no limit")
	fs.IntVar(&c.maxStreamsSub, "max-subscriptions-per-sub", 0, "open streams one token sub may hold on this node; one more is sent away with a retry hint (tokens without sub are not counted); 0 means no limit")
	fs.Float64Var(&c.publishRate, "publish-rate", 0, "publishes per second one publisher (token sub, else client address) may make on average; over it 429 with Retry-After; 0 means no limit")
	fs.IntVar(&c.publishBurst, "publish-burst", 0, "publishes one publisher may make at once within --publish-rate (default: the rate, at least 1)")
	fs.StringVar(&c.trustedProxies, "trusted-proxies", "", "proxies whose X-Forwarded-For names the client, for per-address limits: comma-separated addresses or CIDR prefixes")
	fs.DurationVar(&c.overloadLag, "overload-lag", hub.DefaultOverloadLag, "new connections are reset and new subscriptions sent away with a retry hint while an update has waited longer than this to be dispatched; 0 turns this test off")
	fs.DurationVar(&c.overloadWait, "overload-cpu-wait", hub.DefaultOverloadWait, "new connections are reset and new subscriptions sent away with a retry hint while one goroutine in ten waits longer than this for a CPU; 0 turns this test off")
	fs.BoolVar(&c.subscriptions, "subscriptions", false, "active subscriptions: announce every subscription as it begins and ends on the reserved topic .../subscriptions/..., and serve the subscriptions API")
	fs.DurationVar(&c.subscriptionsGrace, "subscriptions-grace", mercure.DefaultSubscriptionGrace, "how long the end of a subscription waits to be announced: a subscriber back within it with the same token sub and matchers keeps its identifier and nothing is announced; 0 announces ends at once")
	fs.IntVar(&c.subscriptionsHistory, "subscriptions-history", hub.DefaultMaxPresence, "subscription events kept for resume, apart from --history-size: however many come and go, they never push other updates out of the history")
	fs.StringVar(&c.nodeName, "node-name", "", "this node's name in the admin API and the console (default: the host name and the port)")
	fs.DurationVar(&c.nodeLease, "node-lease", mercure.DefaultLease, "with --engine redis: how long a node counts as alive after it last renewed its lease (it renews four times per lease); the subscriptions of a node that died are announced ended about this long after")
	fs.BoolVar(&c.ui, "ui", false, "serve the live web console at /console/ (and redirect / there); always on in development mode")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.String("config", "", "config file: one \"flag value\" per line")
	return fs
}

// parseServe reads flags, then HERALD_* variables, then the config file,
// the first source that sets a flag winning.
func parseServe(args []string, stderr io.Writer) (*serveConfig, error) {
	c := &serveConfig{}
	fs := serveFlags(c)
	fs.SetOutput(stderr)
	err := ff.Parse(fs, args,
		ff.WithEnvVarPrefix("HERALD"),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ff.PlainParser),
	)
	if err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, nil
}

func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(c.logFormat, c.logLevel, stderr)
	if err != nil {
		return err
	}
	defer gcFloor(heapFloor)()
	draft7, draft8, err := parseProtocols(c.protocols)
	if err != nil {
		return err
	}
	writeDelay, err := parseWriteDelay(c.writeDelay)
	if err != nil {
		return err
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	proxies, err := parsePrefixes(c.trustedProxies)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	if c.publishRate < 0 || c.publishBurst < 0 || c.maxStreamsSub < 0 || c.maxSubs < 0 || c.overloadLag < 0 || c.overloadWait < 0 || c.subscriptionsGrace < 0 || c.nodeLease < 0 {
		return errors.New("--publish-rate, --publish-burst, --max-subscribers, --max-subscriptions-per-sub, --overload-lag, --overload-cpu-wait, --subscriptions-grace and --node-lease cannot be negative")
	}
	if c.subscriptionsHistory < 1 {
		return errors.New("--subscriptions-history must be at least 1")
	}
	tracer, stopTracing, err := newTracing(ctx, log, c.shutdown)
	if err != nil {
		return err
	}
	defer stopTracing() // last: the spans of the shutdown go too
	reg := prometheus.NewRegistry()
	// The hub, once made: while it is overloaded the listener stops
	// listening and the kernel refuses new connections, the cheapest
	// refusal there is.
	var hubRef atomic.Pointer[hub.Hub]
	ln, maxConns, err := openListener(ctx, c, log, reg, func() bool {
		h := hubRef.Load()
		return h != nil && h.Overloaded()
	})
	if err != nil {
		return err
	}
	defer ln.Close()
	shedAt := shedConnectionsAt(maxConns)
	public, err := publicURL(c, ln.Addr())
	if err != nil {
		return err
	}

	// Keys: none configured means development mode.
	devMode := c.jwtKey == "" && c.pubKey == "" && c.subKey == ""
	if devMode {
		if c.jwtKey, err = devKey(c); err != nil {
			return err
		}
		c.anonymous = true
	}
	algs := splitList(c.jwtAlg)
	pubKey, err := keyFor(c.pubKey, c.jwtKey, algs, "publisher")
	if err != nil {
		return err
	}
	subKey, err := keyFor(c.subKey, c.jwtKey, algs, "subscriber")
	if err != nil {
		return err
	}
	for _, k := range []*mercure.Key{pubKey, subKey} {
		if k != nil && k.Weak() && !devMode {
			log.Warn("an HMAC secret shorter than 32 bytes is easy to brute-force; use a longer one")
		}
	}
	// Subscriptions and token grants share one table of compiled matchers.
	matchers := hub.NewMatchers()
	tokens, err := mercure.NewValidator(mercure.TokenConfig{
		Matchers:      matchers,
		PublisherKey:  pubKey,
		SubscriberKey: subKey,
		Issuer:        c.jwtIssuer,
		Audience:      public.String(),
		Draft7:        draft7,
		Draft8:        draft8,
		Base:          public.String(),
	})
	if err != nil {
		return err
	}

	// The scheduler's metrics add go_sched_latencies_seconds, the waits for
	// a CPU that the automatic write delay reads (hub/pace.go).
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	engine, engineDesc, closeEngine, err := openEngine(ctx, c, log, reg)
	if err != nil {
		return err
	}
	defer closeEngine()
	heartbeat := c.heartbeat
	if heartbeat <= 0 {
		heartbeat = -1
	}
	h, err := hub.New(hub.Config{
		Engine:                engine,
		Logger:                log.WithGroup("hub"),
		Metrics:               hub.NewMetrics(reg),
		QueueBytes:            c.queueBytes,
		Heartbeat:             heartbeat,
		WriteTimeout:          c.writeTimeout,
		WriteDelay:            writeDelay,
		RandomIDs:             c.randomIDs,
		Matchers:              matchers,
		MaxPatterns:           c.maxPatterns,
		MaxPatternsPerSubject: c.maxPatternsSubject,
		OverloadLag:           offIfZero(c.overloadLag),
		OverloadWait:          offIfZero(c.overloadWait),
		Tracer:                tracer,
	})
	if err != nil {
		return err
	}
	defer h.Close()
	hubRef.Store(h)
	var srv *server.Server
	streams := new(stream.Tracker)
	// A cluster is what engines shared between nodes keep besides the
	// history; the node's name in it is unique per process.
	cluster, _ := engine.(hub.Cluster)
	display := cmp.Or(c.nodeName, nodeName(ln.Addr()))
	var adm *admin.Handler
	// Subscribers in their grace period at shutdown are kept for the next
	// start, with a history that outlives the process.
	presenceFile := ""
	if c.subscriptions && c.engine != "memory" {
		if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
		presenceFile = filepath.Join(c.dataDir, "subscriptions.json")
	}
	handler, err := mercure.New(mercure.Config{
		Streams:        streams,
		HijackedClosed: func() { srv.HijackedClosed() },
		Hub:            h,
		Tokens:         tokens,
		PublicURL:      public,
		Draft7:         draft7,
		Draft8:         draft8,
		Anonymous:      c.anonymous,
		CORSOrigins:    splitList(c.corsOrigins),
		Logger:         log.WithGroup("mercure"),
		MaxBodyBytes:   c.maxBody,
		MaxLifetime:    c.maxLifetime,
		MaxPatterns:    c.maxPatternsSub,

		MaxStreamsPerSubject: c.maxStreamsSub,
		PublishRate:          c.publishRate,
		PublishBurst:         c.publishBurst,
		TrustedProxies:       proxies,
		Shed: func() string {
			if h.Overloaded() {
				return mercure.ShedOverload
			}
			if shedAt > 0 && ln.Open() > shedAt {
				return mercure.ShedConnections
			}
			if c.maxSubs > 0 && h.Subscribers() >= c.maxSubs {
				return mercure.ShedSubscribers
			}
			return ""
		},
		Registerer: reg,
		Tracer:     tracer,

		Subscriptions:     c.subscriptions,
		SubscriptionGrace: offIfZero(c.subscriptionsGrace),
		Cluster:           cluster,
		Node:              display + "/" + randomHex(4),
		Lease:             c.nodeLease,
		NodeInfo:          func() []byte { return adm.NodeInfo() },
		PresenceFile:      presenceFile,
	})
	if err != nil {
		return err
	}
	adm, err = admin.New(admin.Config{
		Hub: h, Mercure: handler, Tokens: tokens, Open: devMode, Cluster: cluster,
		Node: display, Version: version(), Connections: ln.Open,
		Logger: log.WithGroup("admin"),
	})
	if err != nil {
		return err
	}
	adminCtx, stopAdmin := context.WithCancel(ctx)
	var adminRun sync.WaitGroup
	adminRun.Go(func() { adm.Run(adminCtx) })
	adminRun.Go(func() { handler.Run(adminCtx) }) // the node's lease and its cluster duties
	defer adminRun.Wait()
	defer stopAdmin()
	var cons *console.Handler
	if c.ui || devMode {
		cc := console.Config{HubPath: public.EscapedPath(), Subscriptions: c.subscriptions}
		if devMode {
			cc.DevToken = func() (string, error) {
				return mercure.Mint(mercure.MintOptions{
					Key: pubKey, Publish: []string{"*"}, Subscribe: []string{"*"}, Admin: true,
					TTL: 12 * time.Hour, Issuer: c.jwtIssuer, Audience: public.String(), Subject: "herald-console",
				})
			}
		}
		cons = console.New(cc)
	}
	srv, err = server.New(server.Config{
		Listener:        ln,
		AdminAddr:       c.adminAddr,
		TLSCert:         c.tlsCert,
		TLSKey:          c.tlsKey,
		H2C:             c.h2c,
		Handler:         routes(adm, cons, handler, public.EscapedPath()),
		Hub:             h,
		Streams:         streams,
		Drained:         handler.Close, // the ends still in their grace period are announced
		Registry:        reg,
		Logger:          log.WithGroup("server"),
		ShutdownTimeout: c.shutdown,
	})
	if err != nil {
		return err
	}
	log.Info("herald listening", "addr", srv.Addr().String(), "hub", public.String(), "engine", engineDesc, "protocols", c.protocols,
		"max_connections", limitText(maxConns), "open_files_limit", fdLimit())
	if devMode {
		if err := printDevBanner(stdout, c, pubKey, public); err != nil {
			return err
		}
	}
	return srv.Serve(ctx)
}

// routes sends /admin/ to the admin API, /console/ to the console (when
// on, with / redirected there) and everything else to the hub. Not an
// http.ServeMux: it would clean the paths of the subscriptions API, whose
// segments are percent-encoded URLs ("https%3A%2F%2F…").
func routes(adm *admin.Handler, cons *console.Handler, hubHandler http.Handler, hubPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/admin/"):
			adm.ServeHTTP(w, r)
		case cons != nil && strings.HasPrefix(p, "/console/"):
			cons.ServeHTTP(w, r)
		case cons != nil && p == "/console", cons != nil && p == "/" && hubPath != "/":
			http.Redirect(w, r, "/console/", http.StatusFound)
		default:
			hubHandler.ServeHTTP(w, r)
		}
	})
}

// nodeName names this node in the admin API: the host's name and the
// port it serves on.
func nodeName(addr net.Addr) string {
	host, err := os.Hostname()
	if err != nil {
		host = "herald"
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		return host + ":" + strconv.Itoa(ta.Port)
	}
	return host
}

// limitText says a limit for the log: its value, or "none".
func limitText(n int) string {
	if n <= 0 {
		return "none"
	}
	return strconv.Itoa(n)
}

// offIfZero maps a flag's 0 (off) onto the hub's negative (off; its zero
// means the default).
func offIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// parsePrefixes reads a comma-separated list of addresses and CIDR
// prefixes; an address is a prefix of its full length.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range splitList(s) {
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", v)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func parseProtocols(s string) (draft7, draft8 bool, err error) {
	for _, p := range splitList(s) {
		switch p {
		case "7":
			draft7 = true
		case "8":
			draft8 = true
		default:
			return false, false, fmt.Errorf("--protocols: unknown draft %q (use 7, 8 or 7,8)", p)
		}
	}
	if !draft7 && !draft8 {
		return false, false, errors.New("--protocols: enable at least one of 7 and 8")
	}
	return draft7, draft8, nil
}

// maxWriteDelay bounds a fixed --write-delay: a stream's end (slow,
// expired, shutdown) is noticed up to one delay late.
const maxWriteDelay = time.Second

// parseWriteDelay maps --write-delay onto hub.Config.WriteDelay: auto is
// zero (the hub's default), 0 is negative (never wait), a duration is
// itself.
func parseWriteDelay(s string) (time.Duration, error) {
	if s == "auto" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxWriteDelay {
		return 0, fmt.Errorf("--write-delay: want auto, 0 or a duration up to %v like 20ms, not %q", maxWriteDelay, s)
	}
	if d == 0 {
		return -1, nil
	}
	return d, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func keyFor(specific, shared string, algs []string, role string) (*mercure.Key, error) {
	v := specific
	if v == "" {
		v = shared
	}
	if v == "" {
		return nil, nil
	}
	k, err := mercure.ParseKey(v, algs)
	if err != nil {
		return nil, fmt.Errorf("%s key: %w", role, err)
	}
	return k, nil
}

// publicURL is --public-url, or the hub path on the listening address.
func publicURL(c *serveConfig, addr net.Addr) (*url.URL, error) {
	if c.publicURL != "" {
		u, err := url.Parse(c.publicURL)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("--public-url must be an absolute URL, not %q", c.publicURL)
		}
		return u, nil
	}
	host := c.addr
	if h, port, err := net.SplitHostPort(c.addr); err == nil {
		if h == "" || h == "0.0.0.0" || h == "::" {
			h = "localhost"
		}
		if port == "0" {
			_, port, _ = net.SplitHostPort(addr.String())
		}
		host = net.JoinHostPort(h, port)
	}
	scheme := "http"
	if c.tlsCert != "" {
		scheme = "https"
	}
	return &url.URL{Scheme: scheme, Host: host, Path: mercure.DefaultPath}, nil
}

// openEngine opens the history the flags name. It returns a description
// for the log, which names a Redis deployment without its credentials.
func openEngine(ctx context.Context, c *serveConfig, log *slog.Logger, reg prometheus.Registerer) (hub.Engine, string, func(), error) {
	ret := hub.Retention{MaxCount: c.historySize, MaxAge: c.historyMaxAge, MaxPresence: c.subscriptionsHistory}
	switch {
	case c.engine == "memory":
		e := memory.New(memory.Options{Retention: ret})
		return e, "memory", func() { _ = e.Close() }, nil
	case c.engine == "bolt" || c.engine == "":
		if err := os.MkdirAll(c.dataDir, 0o750); err != nil {
			return nil, "", nil, fmt.Errorf("create data directory: %w", err)
		}
		path := filepath.Join(c.dataDir, "herald.db")
		e, err := bolt.Open(path, bolt.Options{Retention: ret, Logger: log.WithGroup("bolt"), Registerer: reg})
		if err != nil {
			return nil, "", nil, err // it names the file already
		}
		return e, "bolt " + path, func() {
			if err := e.Close(); err != nil {
				log.Error("close history", "err", err)
			}
		}, nil
	case strings.Contains(c.engine, "://"):
		redis.RouteClientLog(log.WithGroup("redis"))
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		e, err := redis.Open(ctx, c.engine, redis.Options{
			Retention:   ret,
			Prefix:      c.redisPrefix,
			Wait:        c.redisWait,
			WaitTimeout: c.redisWaitTimeout,
			Logger:      log.WithGroup("redis"),
			Registerer:  reg,
		})
		if err != nil {
			return nil, "", nil, fmt.Errorf("--engine: %w", err)
		}
		return e, "redis " + e.Topology() + " prefix " + c.redisPrefix, func() {
			if err := e.Close(); err != nil {
				log.Error("close history", "err", err)
			}
		}, nil
	}
	return nil, "", nil, fmt.Errorf("--engine: unknown engine %q (use bolt, memory or a redis:// URL)", c.engine)
}

// printDevBanner tells a new user how to use the hub in development mode.
func printDevBanner(w io.Writer, c *serveConfig, key *mercure.Key, public *url.URL) error {
	tok, err := mercure.Mint(mercure.MintOptions{
		Key:      key,
		Publish:  []string{"*"},
		TTL:      24 * time.Hour,
		Issuer:   c.jwtIssuer,
		Audience: public.String(),
	})
	if err != nil {
		return fmt.Errorf("mint development token: %w", err)
	}
	hubURL := public.String()
	_, err = fmt.Fprintf(w, `
  DEVELOPMENT MODE: no --jwt-key given, so herald generated a random key,
  lets anyone subscribe without a token, and prints a publisher token.
  Do not expose this hub to a network; set --jwt-key for real use.

  Publisher token (valid 24h, may publish on every topic):
    %s

  Subscribe:
    curl -N '%s?match=https://example.com/books/1'

  Publish:
    curl -d topic=https://example.com/books/1 -d 'data={"title":"Dune"}' \
      -H 'Authorization: Bearer %s' %s

  Console:
    %s

`, tok, hubURL, tok, hubURL, consoleURL(public))
	return err
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// consoleURL is the console's address beside the hub's.
func consoleURL(public *url.URL) string {
	u := *public
	u.Path, u.RawPath, u.RawQuery, u.Fragment = "/console/", "", "", ""
	return u.String()
}

// devKey returns the development key, kept in the data directory so that
// tokens minted with it outlive a restart.
func devKey(c *serveConfig) (string, error) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	fresh := hex.EncodeToString(b[:])
	if err := os.MkdirAll(c.dataDir, 0o750); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(c.dataDir, "dev.key")
	if k, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(k))) >= 32 {
		return strings.TrimSpace(string(k)), nil
	}
	if err := os.WriteFile(path, []byte(fresh+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write development key: %w", err)
	}
	return fresh, nil
}
