package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/mercure"
)

// TestConfigSources checks that each serve flag can come from the command
// line, HERALD_<FLAG> or the --config file, in that order of precedence.
func TestConfigSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "herald.conf")
	conf := "# herald configuration\naddr 127.0.0.1:4000\nhistory-size 42\njwt-issuer from-file\nheartbeat 3s\ncors-origins https://a.example,https://b.example\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HERALD_HISTORY_SIZE", "7")
	t.Setenv("HERALD_DATA_DIR", "/from/env")
	t.Setenv("HERALD_HISTORY_MAX_AGE", "90m")
	c, err := parseServe([]string{"--config", file, "--jwt-issuer", "from-flag"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"addr from file", c.addr, "127.0.0.1:4000"},
		{"history-size: env over file", c.historySize, 7},
		{"data-dir from env", c.dataDir, "/from/env"},
		{"history-max-age from env", c.historyMaxAge, 90 * time.Minute},
		{"jwt-issuer: flag over file", c.jwtIssuer, "from-flag"},
		{"heartbeat from file", c.heartbeat, 3 * time.Second},
		{"cors-origins from file", c.corsOrigins, "https://a.example,https://b.example"},
		{"engine default", c.engine, "bolt"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestEveryServeFlagHasAnEnvName(t *testing.T) {
	c := &serveConfig{}
	fs := serveFlags(c)
	for name := range strings.SplitSeq("addr data-dir engine jwt-key publisher-jwt-key subscriber-jwt-key jwt-alg jwt-issuer public-url anonymous cors-origins heartbeat history-size history-max-age tls-cert tls-key log-format protocols redis-prefix redis-wait redis-wait-timeout", " ") {
		if fs.Lookup(name) == nil {
			t.Errorf("missing flag --%s", name)
		}
	}
	// An env var sets every flag, e.g. a bool.
	t.Setenv("HERALD_ANONYMOUS", "true")
	got, err := parseServe(nil, io.Discard)
	if err != nil || !got.anonymous {
		t.Fatalf("HERALD_ANONYMOUS: %v %v", got, err)
	}
	// The Redis engine's settings come from the environment like any flag.
	t.Setenv("HERALD_ENGINE", "redis://10.0.0.1:6379/2")
	t.Setenv("HERALD_REDIS_WAIT", "2")
	t.Setenv("HERALD_REDIS_PREFIX", "app1")
	got, err = parseServe(nil, io.Discard)
	if err != nil || got.engine != "redis://10.0.0.1:6379/2" || got.redisWait != 2 || got.redisPrefix != "app1" {
		t.Fatalf("HERALD_ENGINE, HERALD_REDIS_*: %+v %v", got, err)
	}
}

// TestOpenRedisErrors: a Redis URL that cannot be used fails serve with
// a message that names the flag and never the password.
func TestOpenRedisErrors(t *testing.T) {
	for _, c := range []serveConfig{
		{engine: "redis://:hunter2@127.0.0.1:1/0", redisPrefix: "herald"},                   // nothing listens
		{engine: "redis://:hunter2@127.0.0.1:6379/x", redisPrefix: "herald"},                // bad db
		{engine: "postgres://:hunter2@127.0.0.1:6379/0", redisPrefix: "herald"},             // not redis
		{engine: "redis://:hunter2@127.0.0.1:6379/0", redisPrefix: "a{b"},                   // bad prefix
		{engine: "redis://:hunter2@127.0.0.1:6379/0", redisPrefix: "herald", redisWait: -1}, // bad wait
	} {
		_, _, _, err := openEngine(t.Context(), &c, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err == nil {
			t.Errorf("openEngine(%+v) succeeded", c)
			continue
		}
		if !strings.HasPrefix(err.Error(), "--engine: ") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("openEngine(%q): error %q should start with --engine: and not name the password", c.engine, err)
		}
	}
}

func TestBadConfig(t *testing.T) {
	for _, args := range [][]string{
		{"--history-size", "many"},
		{"--no-such-flag"},
		{"--config", "/does/not/exist"},
		{"extra-argument"},
	} {
		if _, err := parseServe(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	for _, p := range []string{"", "9", "7,x"} {
		if _, _, err := parseProtocols(p); err == nil {
			t.Errorf("--protocols %q accepted", p)
		}
	}
	for _, d := range []string{"", "fast", "-5ms", "20", "2s", "8760h"} {
		if _, err := parseWriteDelay(d); err == nil {
			t.Errorf("--write-delay %q accepted", d)
		}
	}
}

// TestTrustedProxiesFlag: addresses and prefixes, IPv4 and IPv6, become
// prefixes; anything else is refused with the value named.
func TestTrustedProxiesFlag(t *testing.T) {
	got, err := parsePrefixes("10.0.0.0/8, 192.168.1.7,::1,2001:db8::/32,10.1.2.3/16")
	if err != nil {
		t.Fatal(err)
	}
	want := "[10.0.0.0/8 192.168.1.7/32 ::1/128 2001:db8::/32 10.1.0.0/16]"
	if fmt.Sprint(got) != want {
		t.Errorf("parsePrefixes = %v, want %s", got, want)
	}
	for _, bad := range []string{"proxy.example", "10.0.0.0/33", "1.2.3"} {
		if _, err := parsePrefixes(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("parsePrefixes(%q): error %v", bad, err)
		}
	}
}

// TestWriteDelayFlag: auto leaves the choice to the hub (zero), 0 turns
// the delay off (negative in hub.Config), a duration is kept.
func TestWriteDelayFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"auto": 0, "0": -1, "0s": -1, "25ms": 25 * time.Millisecond, "1s": time.Second} {
		got, err := parseWriteDelay(in)
		if err != nil || got != want {
			t.Errorf("parseWriteDelay(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	c, err := parseServe(nil, io.Discard)
	if err != nil || c.writeDelay != "auto" {
		t.Errorf("default --write-delay %q (%v), want auto", c.writeDelay, err)
	}
}

func TestTokenCommand(t *testing.T) {
	var out, errb bytes.Buffer
	const aud = "http://localhost:3000/.well-known/mercure"
	if err := run(t.Context(), []string{"token", "--key", "a-secret-of-at-least-thirty-two-bytes", "--publish", "*", "--subscribe", "urlpattern:https://example.com/:id"}, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	key, _ := mercure.ParseKey("a-secret-of-at-least-thirty-two-bytes", nil)
	v, err := mercure.NewValidator(mercure.TokenConfig{PublisherKey: key, SubscriberKey: key, Issuer: "herald", Audience: aud, Draft8: true, Base: aud})
	if err != nil {
		t.Fatal(err)
	}
	g, err := v.Validate(strings.TrimSpace(out.String()), mercure.ActionPublish)
	if err != nil {
		t.Fatalf("serve would refuse the printed token: %v", err)
	}
	if !g.CanPublish([]string{"anything"}) || !g.CanRead([]string{"https://example.com/7"}) || g.CanRead([]string{"https://other.example/7"}) {
		t.Fatalf("grant %+v", g)
	}
	// --legacy prints a draft-07 token that a draft-07 hub accepts.
	out.Reset()
	if err := run(t.Context(), []string{"token", "--key", "a-secret-of-at-least-thirty-two-bytes", "--legacy", "--publish", "https://example.com/{id}"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	v7, _ := mercure.NewValidator(mercure.TokenConfig{PublisherKey: key, Draft7: true})
	g, err = v7.Validate(strings.TrimSpace(out.String()), mercure.ActionPublish)
	if err != nil || !g.Legacy || !g.CanPublish([]string{"https://example.com/1"}) {
		t.Fatalf("legacy token: %+v %v", g, err)
	}
	if err := run(t.Context(), []string{"token"}, io.Discard, io.Discard); err == nil {
		t.Fatal("token without --key accepted")
	}
}

func TestVersionAndUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "herald ") {
		t.Fatalf("version: %q %v", out.String(), err)
	}
	if err := run(t.Context(), []string{"frobnicate"}, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// TestOpenHistoryError: a history that cannot be opened is named once in
// the error, not wrapped twice.
func TestOpenHistoryError(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be: bbolt cannot open it.
	if err := os.Mkdir(filepath.Join(dir, "herald.db"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := openEngine(t.Context(), &serveConfig{engine: "bolt", dataDir: dir}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err == nil {
		t.Fatal("a directory opened as the history")
	}
	if n := strings.Count(err.Error(), "open history"); n != 1 || !strings.Contains(err.Error(), filepath.Join(dir, "herald.db")) {
		t.Fatalf("error %q: want the file named once after one \"open history\"", err)
	}
}
