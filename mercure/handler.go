// Package mercure is the Mercure protocol over HTTP: subscription,
// publication, authorization and discovery, for draft-08 and the
// pre-standard draft-07 at once, on one endpoint. It turns requests into
// calls on a hub.Hub and knows nothing of listeners or processes.
package mercure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	whatwg "github.com/nlnwa/whatwg-url/url"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/stream"
)

// Cookie names in which browsers present tokens.
const (
	CookieDraft8 = "__Secure-mercure_access_token"
	CookieDraft7 = "mercureAuthorization"
)

// DefaultPath is the well-known hub path.
const DefaultPath = "/.well-known/mercure"

// DefaultMaxPatterns is the default Config.MaxPatterns.
const DefaultMaxPatterns = 32

// Config configures a Handler. Zero values of the limits mean defaults.
type Config struct {
	// Hub receives publications and subscriptions. Required.
	Hub *hub.Hub
	// Tokens validates access tokens. Required.
	Tokens *Validator
	// PublicURL is the hub's URL as clients reach it: its path is where
	// the handler answers, and it is the resource identifier and the base
	// for relative topics and patterns. Required.
	PublicURL *url.URL
	// Draft7 and Draft8 turn each protocol draft's forms on.
	Draft7, Draft8 bool
	// Anonymous lets subscribers in without a token; they get public
	// updates only.
	Anonymous bool
	// CORSOrigins lists the origins allowed to use the hub from a
	// browser, with credentials. "*" allows any origin, without credentials.
	CORSOrigins []string
	// Logger receives request-level logs; nil discards them.
	Logger *slog.Logger

	// MaxBodyBytes bounds a publish or QUERY body. Default 1 MiB.
	MaxBodyBytes int64
	// BodyTimeout bounds the time to receive a body. Default 30s.
	BodyTimeout time.Duration
	// MaxTopics bounds the topics of one update. Default 64.
	MaxTopics int
	// MaxMatchers bounds the matchers of one subscription. Default 64.
	MaxMatchers int
	// MaxPatterns bounds the distinct patterns (URL patterns and URI
	// templates; exact topics and the wildcard are free) of one
	// subscription: the hub tests each for every update it cannot rule
	// out otherwise. Default 32; negative means MaxMatchers alone
	// bounds them. The hub bounds those of a token subject and of the
	// whole hub (hub.Config.MaxPatternsPerSubject and MaxPatterns).
	MaxPatterns int
	// MaxFieldBytes bounds a topic, id or type. Default 2048.
	MaxFieldBytes int
	// MaxLifetime closes subscriptions older than this, so that revoked
	// credentials stop working even before exp. Zero means no limit.
	MaxLifetime time.Duration
	// Streams counts every subscribe request from its arrival to the end
	// of its stream; hand the same tracker to the server, whose shutdown
	// closes its gate and waits for it. Nil means the handler makes its
	// own (see Handler.Streams).
	Streams *stream.Tracker
	// NoHijack keeps HTTP/1.1 streams inside net/http instead of taking
	// their connections (which makes an idle stream far cheaper).
	NoHijack bool
	// HijackedClosed, when set, is called when a connection taken from
	// net/http is closed, for connection metrics (net/http stops
	// tracking a connection once it is hijacked).
	HijackedClosed func()

	// MaxStreamsPerSubject bounds the open streams of one token sub on
	// this node; a subscription over it is shed (ShedSubject). Tokens
	// without sub, and anonymous subscribers, are not counted. Zero
	// means no limit.
	MaxStreamsPerSubject int
	// PublishRate is how many publishes per second one publisher may
	// make, on average, and PublishBurst how many at once (default: the
	// rate, at least 1); over it a publish gets 429 with Retry-After. A
	// publisher is its token's sub, else its address (ClientAddr). Zero
	// means no limit.
	PublishRate  float64
	PublishBurst int
	// TrustedProxies are the addresses of proxies whose X-Forwarded-For
	// names the client, for per-address limits. Empty: the connection's
	// peer is the client.
	TrustedProxies []netip.Prefix
	// Shed, when set, is asked before every new subscription; a non-empty
	// answer (ShedOverload, ShedConnections) sends the subscription away
	// with a retry hint, as a shutdown does.
	Shed func() string
	// Registerer takes the handler's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Tracer, when set, traces every publish and subscribe request in a
	// span (herald.publish, herald.subscribe) that continues the trace of
	// the request's W3C traceparent header, if any. A subscribe's span
	// ends when its stream goes live, never with the stream. Give the hub
	// the same tracer for the spans beneath (append, dispatch, replay).
	// Nil (the default) traces nothing and reads no trace header.
	Tracer trace.Tracer

	// Subscriptions turns on active subscriptions: every subscription is
	// announced on the hub's reserved topic when it begins and when it
	// ends, and the subscriptions API lists them (see subscriptions.go).
	// Call Close after the last stream has ended, while the hub still
	// takes publications.
	Subscriptions bool
	// SubscriptionGrace is how long the end of a subscription waits to be
	// announced, so that a subscriber that comes back with the same token
	// subject and matchers within it keeps its identifier and nothing is
	// announced. Zero means DefaultSubscriptionGrace; negative, none.
	SubscriptionGrace time.Duration

	// Cluster, when set (an engine shared between nodes), holds what the
	// nodes share besides the history: the active subscriptions of every
	// node, each under a lease the node renews (Run), so that the
	// subscriptions API answers for the whole cluster and the
	// subscriptions of a node that died are announced ended by a survivor;
	// and the revocations of Disconnect, so that every node refuses the
	// revoked tokens and ends their streams.
	Cluster hub.Cluster
	// Node names this node in the cluster; it must be unique per
	// process (herald adds a random suffix to the name it is given).
	// Default: a random name. A start that takes back subscribers kept
	// by the last run (PresenceFile) takes that run's name again.
	Node string
	// Lease is how long a node counts as alive after it last renewed;
	// a dead node's subscriptions end within about that long. Default
	// DefaultLease.
	Lease time.Duration
	// NodeInfo, when set, is what Run stores with each renewal of the
	// lease, for the other nodes' admin API.
	NodeInfo func() []byte
	// PresenceFile, when set, keeps active subscriptions across a
	// restart: Close writes there the subscribers in their grace period
	// (those whose streams the shutdown ended among them) instead of
	// announcing their ends, and New takes them back, in their grace
	// period from then. Clients that come back within it keep their
	// identifiers, and nothing is announced. Use it with a durable
	// history, where those subscriptions' beginnings are.
	PresenceFile string
}

// Handler serves the Mercure endpoints.
type Handler struct {
	cfg      Config
	hub      *hub.Hub
	tokens   *Validator
	base     string
	path     string
	metaPath string
	metaURL  string
	link     string
	log      *slog.Logger
	origins  map[string]bool
	anyOrig  bool
	streams  *stream.Tracker
	baseURL  *whatwg.Url // the hub URL, parsed once for topic resolution
	hubSeg   string      // last segment of the hub path, for reserved()
	limits   limits
	// presence keeps the active subscriptions; nil unless
	// Config.Subscriptions. subsPath is the subscriptions API's path.
	presence *presence
	subsPath string
	revoked  revocations
	node     string // the node's name in the cluster
	// closing is closed by Close; Run stops then, and Close waits for
	// its round in progress (runMu) before it forgets the node.
	closing   chan struct{}
	closeOnce sync.Once
	runMu     sync.Mutex
	// registered: the node has renewed its lease once (Run's only).
	registered bool
	// kicks are the cluster's kicks this node took up, until they end
	// (Run's only).
	kicks map[string]time.Time
	// hold, when set by a test, is called at the named stages of a
	// subscribe request, to hold it there while a shutdown starts.
	hold func(stage string)
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Hub == nil || cfg.Tokens == nil || cfg.PublicURL == nil {
		return nil, errors.New("mercure: Hub, Tokens and PublicURL are required")
	}
	if !cfg.Draft7 && !cfg.Draft8 {
		return nil, errors.New("mercure: no protocol draft enabled")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.MaxTopics <= 0 {
		cfg.MaxTopics = 64
	}
	if cfg.MaxMatchers <= 0 {
		cfg.MaxMatchers = 64
	}
	switch {
	case cfg.MaxPatterns == 0:
		cfg.MaxPatterns = DefaultMaxPatterns
	case cfg.MaxPatterns < 0:
		cfg.MaxPatterns = cfg.MaxMatchers
	}
	if cfg.MaxFieldBytes <= 0 {
		cfg.MaxFieldBytes = hub.MaxMatcherLen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	path := cfg.PublicURL.EscapedPath()
	if path == "" {
		path = "/"
	}
	meta := *cfg.PublicURL
	meta.Path = "/.well-known/oauth-protected-resource" + strings.TrimSuffix(cfg.PublicURL.Path, "/")
	meta.RawPath, meta.RawQuery, meta.Fragment = "", "", ""
	var err error
	h := &Handler{
		cfg:      cfg,
		hub:      cfg.Hub,
		tokens:   cfg.Tokens,
		base:     cfg.PublicURL.String(),
		path:     path,
		metaPath: meta.EscapedPath(),
		metaURL:  meta.String(),
		link:     fmt.Sprintf("<%s>; rel=\"mercure\"", cfg.PublicURL.String()),
		log:      cfg.Logger,
		origins:  make(map[string]bool),
		streams:  cfg.Streams,
		revoked:  revocations{ttl: DefaultRevocationTTL},
		closing:  make(chan struct{}),
	}
	if h.streams == nil {
		h.streams = new(stream.Tracker)
	}
	if h.baseURL, err = whatwg.Parse(h.base); err != nil {
		return nil, fmt.Errorf("mercure: public URL: %w", err)
	}
	// A parse relative to baseURL clones it, and the clone fills its
	// search parameters in on first use: fill them in now, so that the
	// publishes that resolve topics at once only ever read it.
	_ = h.baseURL.SearchParams()
	if err := h.limits.init(&h.cfg); err != nil {
		return nil, fmt.Errorf("mercure: metrics: %w", err)
	}
	h.node = cfg.Node
	if h.node == "" {
		h.node = "herald-" + strings.TrimPrefix(uuidV4(), "urn:uuid:")
	}
	if h.cfg.Lease <= 0 {
		h.cfg.Lease = DefaultLease
	}
	h.subsPath = strings.TrimSuffix(path, "/") + "/subscriptions"
	if cfg.Subscriptions {
		grace := cfg.SubscriptionGrace
		if grace == 0 {
			grace = DefaultSubscriptionGrace
		}
		if h.presence, err = newPresence(h, grace, cfg.Registerer); err != nil {
			return nil, fmt.Errorf("mercure: metrics: %w", err)
		}
		if f := cfg.PresenceFile; f != "" && grace > 0 {
			h.presence.file = f
			kept, node, err := loadKept(f)
			if err != nil {
				h.log.Warn("subscriptions kept by the last run are lost", "err", err)
			}
			if len(kept) > 0 {
				h.presence.keep(kept)
				h.presence.took = true
				if node != "" {
					// The same node again: its records in the cluster are
					// that name's, and they are still there unless the
					// restart took longer than a lease (see renew).
					h.node = node
				}
				h.log.Info("took back the subscribers kept by the last run, in their grace period", "subscribers", len(kept))
			}
		}
	}
	segs := strings.Split(strings.Trim(cfg.PublicURL.Path, "/"), "/")
	h.hubSeg = segs[len(segs)-1]
	for _, o := range cfg.CORSOrigins {
		if o == "*" {
			h.anyOrig = true
			continue
		}
		h.origins[strings.TrimSuffix(o, "/")] = true
	}
	return h, nil
}

// Streams returns the tracker of the handler's streams: Config.Streams, or
// the handler's own.
func (h *Handler) Streams() *stream.Tracker { return h.streams }

// Close announces the end of the subscriptions still in their grace
// period (Config.Subscriptions) and releases what the handler holds. Call
// it once every stream has ended, before the hub stops taking
// publications. It is a no-op without active subscriptions.
func (h *Handler) Close(ctx context.Context) {
	h.closeOnce.Do(func() { close(h.closing) })
	// After Run's round in progress; Run stops at its next.
	h.runMu.Lock()
	defer h.runMu.Unlock()

	if h.presence != nil {
		h.presence.close()
	}
	if c := h.cfg.Cluster; c != nil && (h.presence == nil || !h.presence.kept) {
		// Every end is announced: nothing of this node is left for
		// another to end. A node that kept subscribers for its next start
		// leaves them, and itself, to its lease: it takes them up again
		// if it comes back in time, and another node ends them if not.
		if err := c.Forget(ctx, h.node); err != nil {
			h.log.Warn("cluster: forget this node at shutdown; another will end it when its lease runs out", "err", err)
		}
	}
}

// HubPath returns the path the hub answers on.
func (h *Handler) HubPath() string { return h.path }

// MetadataPath returns the path of the protected resource metadata.
func (h *Handler) MetadataPath() string { return h.metaPath }

// ServeHTTP routes the hub URL and its metadata document.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	switch p {
	case h.path:
	case h.metaPath:
		if h.cfg.Draft8 {
			h.serveMetadata(w, r)
			return
		}
		http.NotFound(w, r)
		return
	default:
		if h.presence != nil && strings.HasPrefix(p, h.subsPath) && (len(p) == len(h.subsPath) || p[len(h.subsPath)] == '/') {
			h.serveSubscriptions(w, r, p[len(h.subsPath):])
			return
		}
		http.NotFound(w, r)
		return
	}
	h.cors(w, r)
	w.Header().Add("Link", h.link)
	switch r.Method {
	case http.MethodGet, "QUERY":
		h.subscribe(w, r)
	case http.MethodPost:
		h.publish(w, r)
	case http.MethodOptions:
		h.preflight(w, r)
	default:
		w.Header().Set("Allow", "GET, QUERY, POST, OPTIONS")
		plainError(w, http.StatusMethodNotAllowed, "method not allowed: use GET or QUERY to subscribe, POST to publish")
	}
}

// plainError writes a text/plain error message.
//
// A 503 says when to try again: a Retry-After of 1 to 3 seconds, drawn at
// random so that clients refused together do not return together.
func plainError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", strconv.Itoa(1+rand.IntN(3)))
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}

// serveMetadata answers the OAuth 2.0 protected resource metadata (RFC 9728).
func (h *Handler) serveMetadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		plainError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	h.cors(w, r)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_ = json.NewEncoder(w).Encode(metadata{
		Resource:      h.base,
		DetailTypes:   []string{"https://mercure.rocks/authorization-detail"},
		BearerMethods: []string{"header"},
		Cookie:        CookieDraft8,
		MatcherTypes:  []string{"exact", "urlpattern"},
		Subscriptions: h.presence != nil,
	})
}

type metadata struct {
	Resource      string   `json:"resource"`
	DetailTypes   []string `json:"authorization_details_types_supported"`
	BearerMethods []string `json:"bearer_methods_supported"`
	Cookie        string   `json:"mercure_cookie"`
	MatcherTypes  []string `json:"mercure_matcher_types_supported"`
	Subscriptions bool     `json:"mercure_subscriptions,omitempty"`
}
