package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/herald-hub/herald/bench"
	"github.com/herald-hub/herald/bench/baseline"
	"github.com/herald-hub/herald/mercure"
)

const benchUsage = `usage: herald bench SCENARIO --hub URL[,URL...] [flags]

Measures a Mercure hub, herald or any other. Tokens come from
--publisher-token/--subscriber-token or are minted from --key.
Only loopback hubs unless --allow-remote.

  herald bench serve-baseline --addr ADDR   runs the plain net/http SSE
                                            broadcaster herald is compared with

scenarios:
`

// benchCmd runs `herald bench`. Its hidden worker mode (`herald bench
// --worker`) holds a share of the subscribers for a parent run, speaking
// JSON over stdin and stdout.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "--worker" {
		return bench.Worker(ctx, os.Stdin, stdout)
	}
	if len(args) > 0 && args[0] == "serve-baseline" {
		// The plain net/http broadcaster every figure is compared with.
		return baseline.ServeCommand(ctx, args[1:], stdout, stderr)
	}
	var scenario string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		scenario, args = args[0], args[1:]
	}

	var c bench.Config
	fs := flag.NewFlagSet("herald bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		for _, s := range bench.Scenarios() {
			fmt.Fprintf(stderr, "  %-8s %s\n", s.Name, s.Summary)
		}
		fmt.Fprint(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Hub, "hub", "", "hub URL, e.g. http://127.0.0.1:3000/.well-known/mercure (required); several, comma-separated, are nodes of one deployment sharing one history (and one --public-url): subscribers and publishers spread over them round-robin")
	fs.StringVar(&c.PublisherToken, "publisher-token", "", "publisher bearer token (default: minted from --key)")
	fs.StringVar(&c.SubscriberToken, "subscriber-token", "", "subscriber bearer token (default: minted from --key; none for anonymous hubs)")
	key := fs.String("key", "", "signing key to mint tokens with: the hub's secret, a PEM private key, or @file")
	alg := fs.String("alg", "", "signing algorithm for minted tokens (default from the key type)")
	aud := fs.String("aud", "", "audience of minted tokens: the hub's public URL (default --hub)")
	iss := fs.String("iss", "herald", "issuer of minted tokens: the hub's --jwt-issuer")
	fs.BoolVar(&c.Draft7, "legacy", false, "draft-07 hub: legacy tokens and the pre-standard protocol")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a hub that is not on loopback")
	fs.BoolVar(&c.Insecure, "insecure", false, "skip TLS certificate verification")
	fs.BoolVar(&c.HTTP2, "http2", false, "use HTTP/2 (TLS, or h2c prior knowledge for http://) instead of HTTP/1.1")
	fs.IntVar(&c.SourceAddrs, "source-addrs", 8, "spread connections over 127.0.0.1..N (1: no binding)")
	fs.IntVar(&c.Subscribers, "subscribers", 100, "subscriber streams (fanout, idle, slow: prompt and slow together)")
	fs.IntVar(&c.Topics, "topics", 1, "topics the subscribers (and publishes) spread over")
	fs.IntVar(&c.Publishers, "publishers", 0, "concurrent publishers (default: fanout 4, publish 8, resume 64)")
	fs.Float64Var(&c.Rate, "rate", 100, "fanout: total publish rate, updates/s (the first step of --find-max)")
	fs.IntVar(&c.Payload, "payload", 100, "bytes of data per update")
	fs.DurationVar(&c.Duration, "duration", 0, "measured phase: publishing (fanout, publish, slow: each of its two runs), each phase (resume), the hold (idle), the churn (default 10s; 5s per --find-max step; 30s for resume)")
	fs.DurationVar(&c.Drain, "drain", 3*time.Second, "fanout: longest wait for deliveries after the last publish; resume: longest stall of a replay")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 60*time.Second, "bound on opening all subscribers")
	fs.IntVar(&c.ConnectConcurrency, "connect-concurrency", 64, "subscriptions opened at once, per process")
	fs.BoolVar(&c.FindMax, "find-max", false, "fanout: ramp --rate by 1.5x per step up to the highest with p99 under --p99-bound and zero loss")
	fs.DurationVar(&c.P99Bound, "p99-bound", 100*time.Millisecond, "find-max latency bound")
	fs.IntVar(&c.MaxSteps, "max-steps", 12, "find-max: most steps")
	fs.IntVar(&c.History, "history", 10_000, "resume: updates published before resuming")
	fs.IntVar(&c.Attached, "attached", 0, "publish: subscribers held open on another topic while publishing")
	fs.StringVar(&c.RestartCmd, "restart-cmd", "", "resume: shell command run between publishing and resuming that restarts the hub at the same address")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "idle, churn, slow, storm: the hub's process id, to sample its RSS, CPU and open fds from /proc")
	fs.StringVar(&c.MetricsURL, "metrics-url", "", "idle, churn, slow, storm: the hub's Prometheus endpoint for goroutines, heap, connections and (storm) its refusal counters; fanout: for herald's write delay in force (default: the hub's origin + /metrics, if it answers; off: none)")
	fs.Float64Var(&c.ChurnRate, "churn-rate", 100, "churn: new subscribers per second (half leave cleanly, half reset the socket)")
	fs.DurationVar(&c.Settle, "settle", 0, "churn: longest wait for the server to return to baseline (default 60s); storm: the same after each run (default 30s); idle: for its connections to go (default 10s)")
	fs.Float64Var(&c.SlowFraction, "slow-fraction", 0.1, "slow: fraction of --subscribers that read slowly or not at all")
	fs.StringVar(&c.SlowMode, "slow-mode", "stall", "slow: stall (never read) or slow (one event per --slow-delay)")
	fs.DurationVar(&c.SlowDelay, "slow-delay", 100*time.Millisecond, "slow: pause after each event in --slow-mode slow")
	fs.IntVar(&c.Patterns, "patterns", 0, "idle, fanout: URL patterns every subscriber adds to its subscription, the same for all, matching nothing published")
	fs.IntVar(&c.FloodConns, "flood-conns", 100, "flood: connections that each subscribe with their own distinct URL patterns")
	fs.IntVar(&c.FloodPatterns, "flood-patterns", 64, "flood: URL patterns per flood connection")
	fs.IntVar(&c.StormConns, "storm-conns", 30_000, "storm: connection attempts of the storm, each a subscription to a topic nobody publishes on")
	fs.DurationVar(&c.StormWindow, "storm-window", 3*time.Second, "storm: the attempts are spread evenly over this window")
	fs.IntVar(&c.StormWorkers, "storm-workers", 0, "storm: make the attempts from this many worker processes (0: as the open-files limit requires, at least one; -1: this process)")
	fs.IntVar(&c.Workers, "workers", 0, "hold the subscribers in this many worker processes (0: as the open-files limit requires, and one from 1,000 subscribers; -1: none)")
	fs.BoolVar(&c.JSON, "json", false, "print one JSON object instead of the table")
	fs.StringVar(&c.Report, "report", "", "write a self-contained HTML report to this file")
	verbose := fs.Bool("v", false, "log the client's reconnections and errors to stderr")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile to the file (is the load tool the bottleneck?)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if scenario == "" && fs.NArg() > 0 {
		scenario = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if scenario == "" {
		fs.Usage()
		return errors.New("bench: name a scenario")
	}
	if c.Hub == "" {
		fs.Usage()
		return errors.New("bench: --hub is required")
	}
	if *key != "" {
		if err := mintBenchTokens(&c, *key, *alg, *aud, *iss); err != nil {
			return err
		}
	}
	if isTerminal(stderr) && !c.JSON {
		c.Progress = stderr
	}
	if *verbose {
		c.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	_, err := bench.Run(ctx, scenario, c, stdout)
	return err
}

// mintBenchTokens mints what --publisher-token and --subscriber-token did
// not give: a publisher token for every topic and a subscriber token for
// every topic (harmless on anonymous hubs, needed on the others).
func mintBenchTokens(c *bench.Config, key, alg, aud, iss string) error {
	var algs []string
	if alg != "" {
		algs = []string{alg}
	}
	k, err := mercure.ParseKey(key, algs)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	if aud == "" {
		// The nodes of one deployment share one audience; the first
		// stands for it unless --aud names it.
		aud = strings.TrimSpace(c.Hubs()[0])
		if u, err := url.Parse(aud); err == nil && (u.Path == "" || u.Path == "/") {
			u.Path = mercure.DefaultPath
			aud = u.String()
		}
	}
	o := mercure.MintOptions{Key: k, Alg: alg, TTL: 24 * time.Hour, Issuer: iss, Audience: aud, Subject: "herald-bench", Legacy: c.Draft7}
	if c.PublisherToken == "" {
		p := o
		p.Publish = []string{"*"}
		if c.PublisherToken, err = mercure.Mint(p); err != nil {
			return fmt.Errorf("mint publisher token: %w", err)
		}
	}
	if c.SubscriberToken == "" {
		s := o
		s.Subscribe = []string{"*"}
		if c.SubscriberToken, err = mercure.Mint(s); err != nil {
			return fmt.Errorf("mint subscriber token: %w", err)
		}
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal), where
// a progress line that rewrites itself makes sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
