package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herald-hub/herald/client"
)

// defaultHubPath is the well-known path a hub URL without a path gets.
const defaultHubPath = "/.well-known/mercure"

// Env is what a scenario runs with: the configuration, clients for
// subscribers and for publishers (each kind over its own transport) for
// every hub of Cfg.Hub, and the open-files limit that decides whether
// subscribers need worker processes.
type Env struct {
	Cfg Config
	// FDLimit is this process's open-files limit (0 when unknown).
	FDLimit uint64
	// RunID is random per run; topics carry it so runs never mix.
	RunID string

	subHTTP, pubHTTP *http.Client
	// nodes are the hubs' clients, in Cfg.Hub's order; subs and pubs
	// are the first's.
	nodes       []node
	subs, pubs  *client.Client
	dialer      *sourceDialer
	local       bool // a worker: never spread further
	workersUsed int
}

// node is one hub of the deployment.
type node struct {
	hub        string
	subs, pubs *client.Client
}

func newEnv(cfg Config, worker bool) (*Env, error) {
	var id [6]byte
	_, _ = rand.Read(id[:])
	e := &Env{Cfg: cfg, FDLimit: fdLimit(), RunID: hex.EncodeToString(id[:]), local: worker}
	var us []*url.URL
	for _, h := range cfg.Hubs() {
		u, err := url.Parse(h)
		if err != nil {
			return nil, err
		}
		us = append(us, u)
	}
	d := newSourceDialer(us, cfg.SourceAddrs)
	e.dialer = d
	// Subscribers: every stream its own connection under HTTP/1.1, so no
	// limit per host and no idle pool to speak of.
	e.subHTTP = &http.Client{Transport: newTransport(cfg, us[0], d, 1)}
	// Publishers: keep-alive connections, one per concurrent publisher.
	// A publish that has no answer in 30s is a failed publish, not a hang.
	pt := newTransport(cfg, us[0], d, max(cfg.Publishers, 1)+4)
	pt.ResponseHeaderTimeout = 30 * time.Second
	e.pubHTTP = &http.Client{Transport: pt}
	for _, u := range us {
		n := node{hub: u.String()}
		var err error
		if n.subs, err = e.newClient(n.hub, e.subHTTP); err != nil {
			return nil, err
		}
		if n.pubs, err = e.newClient(n.hub, e.pubHTTP); err != nil {
			return nil, err
		}
		e.nodes = append(e.nodes, n)
	}
	e.subs, e.pubs = e.nodes[0].subs, e.nodes[0].pubs
	return e, nil
}

func (e *Env) newClient(hub string, hc *http.Client) (*client.Client, error) {
	return client.New(client.Config{
		Hub:             hub,
		PublisherToken:  e.Cfg.PublisherToken,
		SubscriberToken: e.Cfg.SubscriberToken,
		Draft7:          e.Cfg.Draft7,
		HTTPClient:      hc,
		MinBackoff:      50 * time.Millisecond,
		MaxBackoff:      2 * time.Second,
		// The hub is what is measured: a breaker failing publishes fast
		// would measure the breaker.
		Breaker: client.BreakerSettings{Disabled: true},
		Logger:  e.Cfg.Logger,
	})
}

// nodeFor is the hub of subscriber or publisher i: round-robin.
func (e *Env) nodeFor(i int) node { return e.nodes[i%len(e.nodes)] }

// publishers is one publisher client per hub, for publish to spread over.
func (e *Env) publishers() []*client.Client {
	out := make([]*client.Client, len(e.nodes))
	for k, n := range e.nodes {
		out[k] = n.pubs
	}
	return out
}

// Subscribers is the client subscriber streams are opened with (the
// first hub's): it shares one transport with unlimited connections per
// host.
func (e *Env) Subscribers() *client.Client { return e.subs }

// Publishers is the client updates are published with (the first
// hub's), over keep-alive connections.
func (e *Env) Publishers() *client.Client { return e.pubs }

// Topic returns the URL of topic k of this run.
func (e *Env) Topic(scenario string, k int) string {
	return fmt.Sprintf("https://bench.herald.invalid/%s/%s/%d", e.RunID, scenario, k)
}

// Topics returns the URLs of the first n topics of this run.
func (e *Env) Topics(scenario string, n int) []string {
	out := make([]string, n)
	for k := range out {
		out[k] = e.Topic(scenario, k)
	}
	return out
}

func (e *Env) close() { e.closeIdle() }

// closeIdle closes the clients' idle keep-alive connections, so that a
// hub left alone between two runs holds none of ours.
func (e *Env) closeIdle() {
	e.subHTTP.CloseIdleConnections()
	e.pubHTTP.CloseIdleConnections()
}

// fillCommon sets the fields every Result shares.
func (e *Env) fillCommon(scenario string, r *Result) {
	r.Scenario = scenario
	r.Hub = e.Cfg.Hub
	r.Protocol = "HTTP/1.1"
	if e.Cfg.HTTP2 {
		r.Protocol = "HTTP/2"
	}
	r.Draft = "8"
	if e.Cfg.Draft7 {
		r.Draft = "7"
	}
	r.FDLimit = e.FDLimit
	r.SourceAddrs = e.Cfg.SourceAddrs
	if r.Workers == 0 {
		r.Workers = e.workersUsed
	}
}

// hubURL parses a hub URL, giving it the well-known path when it has none.
func hubURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--hub: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("--hub %q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("--hub %q: no host", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = defaultHubPath
	}
	return u, nil
}

// requireLoopback refuses hosts that are not on this machine's loopback.
// A name is resolved and every address must be loopback.
func requireLoopback(_ context.Context, host string) error {
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("hub host %s is not a loopback address: refusing to load a remote server (use --allow-remote if it is yours)", host)
		}
		return nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return nil
	}
	// Names are not resolved: a lookup would itself send traffic off the
	// machine, and a name may point anywhere.
	return fmt.Errorf("hub host %q is a name, not a loopback address: use 127.0.0.1, ::1 or localhost (or --allow-remote if the server is yours)", host)
}

// sourceDialer binds each new connection to the next of 127.0.0.1…N when
// the target is IPv4 loopback: one source address has some 28,000
// ephemeral ports towards one hub port, TIME_WAIT included, which a few
// connection storms use up.
type sourceDialer struct {
	addrs []*net.TCPAddr
	next  atomic.Uint64
	plain net.Dialer
}

func newSourceDialer(hubs []*url.URL, n int) *sourceDialer {
	d := &sourceDialer{plain: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}}
	loop4 := true // every hub: a 127.0.0.x source cannot reach ::1
	for _, u := range hubs {
		ip := net.ParseIP(u.Hostname())
		loop4 = loop4 && ((ip != nil && ip.To4() != nil && ip.IsLoopback()) || u.Hostname() == "localhost")
	}
	if n > 1 && loop4 {
		// From 127.0.0.2 up: the ports of tens of thousands of client
		// sockets stay off 127.0.0.1, where other servers on the machine
		// (and tests running beside a bench) bind their listeners, which a
		// client socket on the same address and port would block.
		for i := 2; i <= min(n+1, 254); i++ {
			d.addrs = append(d.addrs, &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i))})
		}
	}
	return d
}

// offset starts the round robin elsewhere (one offset per worker).
func (d *sourceDialer) offset(k int) { d.next.Store(uint64(k)) }

func (d *sourceDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if len(d.addrs) == 0 {
		return d.plain.DialContext(ctx, network, addr)
	}
	if network == "tcp" {
		network = "tcp4" // a 127.0.0.x source cannot reach ::1
	}
	dd := d.plain
	dd.LocalAddr = d.addrs[(d.next.Add(1)-1)%uint64(len(d.addrs))]
	return dd.DialContext(ctx, network, addr)
}

// newTransport builds a transport for HTTP/1.1 (default) or HTTP/2.
func newTransport(cfg Config, u *url.URL, d *sourceDialer, idlePerHost int) *http.Transport {
	t := &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   idlePerHost,
		MaxConnsPerHost:       0,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0, // a subscription answers headers at once, a replay may not flush them before the first batch
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		TLSClientConfig:       &tls.Config{InsecureSkipVerify: cfg.Insecure}, //nolint:gosec // --insecure, for self-signed test hubs
		ReadBufferSize:        4 << 10,
		WriteBufferSize:       4 << 10,
	}
	var p http.Protocols
	if cfg.HTTP2 {
		if u.Scheme == "https" {
			p.SetHTTP2(true)
		} else {
			p.SetUnencryptedHTTP2(true)
		}
	} else {
		p.SetHTTP1(true)
	}
	t.Protocols = &p
	return t
}
