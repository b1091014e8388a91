// Package admin is herald's admin API, under /admin/ on the hub's
// listener: the node's live figures and their last minutes, the topics
// subscribers hold with their counts, a topic's recent history, and
// disconnecting subscribers. Every request needs a publisher token whose
// Mercure authorization detail grants the "admin" action
// (mercure.ActionAdmin; `herald token --admin`), unless Config.Open says
// otherwise (development mode).
//
//	GET  /admin/nodes                       this node: version, uptime, connections,
//	                                        subscribers, publishes/s, deliveries/s,
//	                                        and one sample a second for the last minutes
//	GET  /admin/topics?after=&limit=        matchers held, with their subscribers, paged
//	GET  /admin/history?topic=&before=&limit=  a topic's updates, newest first, paged
//	POST /admin/disconnect  sub=… | subscriber=…
//	                                        end the streams of every subscriber of a
//	                                        token subject (whose tokens issued until
//	                                        then are refused from then on), or of one
//	                                        subscriber by its identifier (on this
//	                                        node, else, on Redis, by asking every
//	                                        node: 202)
//
// Answers are JSON; bad input gets a 4xx with a plain-text message and
// changes nothing.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
)

// Page bounds.
const (
	DefaultPage = 100
	MaxPage     = 1000
	// MaxHistoryScan is how many updates of the history one history
	// request reads back at most, looking for the topic's.
	MaxHistoryScan = 100_000
)

// Config configures a Handler.
type Config struct {
	Hub     *hub.Hub
	Mercure *mercure.Handler
	Tokens  *mercure.Validator
	// Open lets every request in, with a token or without: development
	// mode only.
	Open bool
	// Node names this node; Version is herald's.
	Node, Version string
	// Connections returns the node's open client connections; nil means
	// unknown (reported as -1).
	Connections func() int
	// Cluster, when set, lists the other nodes of the cluster beside this
	// one, from what each stores with its lease (NodeInfo).
	Cluster hub.Cluster
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler serves the admin API.
type Handler struct {
	cfg     Config
	started time.Time
	log     *slog.Logger

	mu      sync.Mutex
	samples [historySamples]sample
	n       int // samples taken; the last is samples[(n-1)%len]
}

// historySamples is how many one-second samples a node keeps: ten minutes.
const historySamples = 600

// sample is the node's figures at one moment.
type sample struct {
	at                   time.Time
	published, delivered uint64
	subscribers          int
	connections          int
}

// New returns a Handler; call Run to take its samples.
func New(cfg Config) (*Handler, error) {
	if cfg.Hub == nil || cfg.Mercure == nil || cfg.Tokens == nil {
		return nil, errors.New("admin: Hub, Mercure and Tokens are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Handler{cfg: cfg, started: cfg.Now(), log: cfg.Logger}
	a.take()
	return a, nil
}

// Run samples the node's figures every second until ctx ends.
func (a *Handler) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.take()
		}
	}
}

// take records a sample in the ring.
func (a *Handler) take() {
	s := a.sampleNow()
	a.mu.Lock()
	a.samples[a.n%historySamples] = s
	a.n++
	a.mu.Unlock()
}

// ServeHTTP routes /admin/….
func (a *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route, ok := strings.CutPrefix(r.URL.Path, "/admin/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	method := http.MethodGet
	switch route {
	case "nodes", "topics", "history":
	case "disconnect":
		method = http.MethodPost
	default:
		plainError(w, http.StatusNotFound, "no such admin resource: /admin/"+route+" (nodes, topics, history, disconnect)")
		return
	}
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", method)
		plainError(w, http.StatusMethodNotAllowed, "use "+method+" for /admin/"+route)
		return
	}
	if !a.authorize(w, r) {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	switch route {
	case "nodes":
		a.nodes(w, r)
	case "topics":
		a.topics(w, r)
	case "history":
		a.history(w, r)
	case "disconnect":
		a.disconnect(w, r)
	}
}

// authorize lets in a request with an admin token (or any, when open).
func (a *Handler) authorize(w http.ResponseWriter, r *http.Request) bool {
	if a.cfg.Open {
		return true
	}
	scheme, raw, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || raw == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald admin"`)
		plainError(w, http.StatusUnauthorized, "the admin API needs a bearer token with the admin grant (herald token --admin)")
		return false
	}
	g, err := a.cfg.Tokens.Validate(strings.TrimSpace(raw), mercure.ActionPublish)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald admin", error="invalid_token"`)
		plainError(w, http.StatusUnauthorized, "invalid token: "+err.Error())
		return false
	}
	if !g.Admin {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald admin", error="insufficient_scope"`)
		plainError(w, http.StatusForbidden, `the token does not grant the admin action (an authorization detail with "actions": ["admin"])`)
		return false
	}
	return true
}

// Node is one node's figures in /admin/nodes.
type Node struct {
	Name           string  `json:"name"`
	Alive          bool    `json:"alive"`
	Version        string  `json:"version"`
	Started        string  `json:"started"`
	UptimeS        float64 `json:"uptime_s"`
	Connections    int     `json:"connections"`
	Subscribers    int     `json:"subscribers"`
	PublishesPerS  float64 `json:"publishes_per_s"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	// Series holds one sample a second, oldest first, for the last
	// minutes (at most ten): unix seconds and the figures then.
	Series Series `json:"series"`
}

// Series is a node's recent samples, one array per figure.
type Series struct {
	T              []int64   `json:"t"`
	Subscribers    []int     `json:"subscribers"`
	Connections    []int     `json:"connections"`
	PublishesPerS  []float64 `json:"publishes_per_s"`
	DeliveriesPerS []float64 `json:"deliveries_per_s"`
}

// sampleNow reads the node's figures.
func (a *Handler) sampleNow() sample {
	p, d := a.cfg.Hub.Counts()
	s := sample{at: a.cfg.Now(), published: p, delivered: d, subscribers: a.cfg.Hub.Subscribers(), connections: -1}
	if a.cfg.Connections != nil {
		s.connections = a.cfg.Connections()
	}
	return s
}

// rateSpan is how far back the current rates look.
const rateSpan = 5

func (a *Handler) nodes(w http.ResponseWriter, r *http.Request) {
	out := []Node{a.node(1)}
	if c := a.cfg.Cluster; c != nil {
		states, err := c.Nodes(r.Context())
		if err != nil {
			a.log.Warn("admin nodes: list the cluster's nodes", "err", err)
			plainError(w, http.StatusServiceUnavailable, "the cluster's nodes are unavailable; retry shortly")
			return
		}
		for _, st := range states {
			var n Node
			if json.Unmarshal(st.Info, &n) != nil || n.Name == out[0].Name && st.Alive {
				continue // this node, whose own figures are fresher; or no figures yet
			}
			n.Alive = st.Alive
			out = append(out, n)
		}
	}
	writeJSON(w, map[string]any{"nodes": out})
}

// NodeInfo is what this node stores with its lease for the others: its
// figures, with one sample every five seconds of the last five minutes.
func (a *Handler) NodeInfo() []byte {
	b, _ := json.Marshal(a.node(5))
	return b
}

// node is this node's figures, with every step-th sample of the series.
// The series ends with the figures of the moment, which the ring does not
// keep: a page polled often must not shorten the minutes it covers.
func (a *Handler) node(step int) Node {
	now := a.sampleNow()
	a.mu.Lock()
	n := min(a.n, historySamples)
	ss := make([]sample, n, n+1)
	for i := range n {
		ss[i] = a.samples[(a.n-n+i)%historySamples]
	}
	a.mu.Unlock()
	ss = append(ss, now)
	n++
	node := Node{
		Name: a.cfg.Node, Alive: true, Version: a.cfg.Version, Started: a.started.UTC().Format(time.RFC3339),
		UptimeS: round(now.at.Sub(a.started).Seconds()), Connections: now.connections, Subscribers: now.subscribers,
	}
	if n > 1 {
		from := ss[max(0, n-1-rateSpan)]
		node.PublishesPerS, node.DeliveriesPerS = rates(from, now)
	}
	first := 1
	if step > 1 {
		first = max(1, n-historySamples/2)
		first += (n - 1 - first) % step // the last sample always in
	}
	for i := first; i < n; i += step {
		p, d := rates(ss[max(0, i-step)], ss[i])
		node.Series.T = append(node.Series.T, ss[i].at.Unix())
		node.Series.Subscribers = append(node.Series.Subscribers, ss[i].subscribers)
		node.Series.Connections = append(node.Series.Connections, ss[i].connections)
		node.Series.PublishesPerS = append(node.Series.PublishesPerS, p)
		node.Series.DeliveriesPerS = append(node.Series.DeliveriesPerS, d)
	}
	return node
}

func rates(a, b sample) (publishes, deliveries float64) {
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 {
		return 0, 0
	}
	return round(float64(b.published-a.published) / dt), round(float64(b.delivered-a.delivered) / dt)
}

func round(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// page reads limit, which must be 1 to MaxPage (default DefaultPage).
func page(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return DefaultPage, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxPage {
		return 0, fmt.Errorf("limit must be a whole number from 1 to %d", MaxPage)
	}
	return n, nil
}

// Topic is one matcher in /admin/topics.
type Topic struct {
	MatchType   string `json:"match_type"` // exact, urlpattern or selector (draft-07)
	Match       string `json:"match"`
	Subscribers int    `json:"subscribers"`
}

func (a *Handler) topics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := page(q)
	if err != nil {
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	after := q.Get("after")
	tcs, more := a.cfg.Hub.Topics(after, limit)
	out := struct {
		Topics []Topic `json:"topics"`
		Next   string  `json:"next,omitempty"`
	}{Topics: make([]Topic, len(tcs))}
	for i, t := range tcs {
		out.Topics[i] = Topic{MatchType: t.Kind.String(), Match: t.Match, Subscribers: t.Subscribers}
	}
	if more {
		out.Next = "/admin/topics?" + url.Values{"after": {tcs[len(tcs)-1].Match}, "limit": {strconv.Itoa(limit)}}.Encode()
	}
	writeJSON(w, out)
}

// Update is one update in /admin/history.
type Update struct {
	ID      string   `json:"id"`
	Seq     uint64   `json:"seq"`
	Time    string   `json:"time"`
	Topics  []string `json:"topics"`
	Private bool     `json:"private"`
	Type    string   `json:"type,omitempty"`
	Data    string   `json:"data"`
}

func (a *Handler) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	topic := q.Get("topic")
	if topic == "" {
		plainError(w, http.StatusBadRequest, "missing topic: add topic=<topic>")
		return
	}
	limit, err := page(q)
	if err != nil {
		plainError(w, http.StatusBadRequest, err.Error())
		return
	}
	var before uint64
	if v := q.Get("before"); v != "" {
		if before, err = strconv.ParseUint(v, 10, 64); err != nil || before == 0 {
			plainError(w, http.StatusBadRequest, "before must be a positive whole number: the next value of a previous page")
			return
		}
	}
	us, next, err := a.cfg.Hub.Recent(r.Context(), topic, before, limit, MaxHistoryScan)
	if err != nil {
		a.log.Warn("admin history: read the history", "err", err)
		plainError(w, http.StatusServiceUnavailable, "history is unavailable; retry shortly")
		return
	}
	out := struct {
		Topic   string   `json:"topic"`
		Updates []Update `json:"updates"`
		Next    string   `json:"next,omitempty"`
	}{Topic: topic, Updates: make([]Update, 0, len(us))}
	for _, u := range us {
		ev, err := u.Event()
		if err != nil {
			continue
		}
		out.Updates = append(out.Updates, Update{ID: u.ID, Seq: u.Seq, Time: u.Time.UTC().Format(time.RFC3339Nano),
			Topics: u.Topics, Private: u.Private, Type: ev.Type, Data: ev.Data})
	}
	if next > 0 {
		out.Next = "/admin/history?" + url.Values{"topic": {topic}, "before": {strconv.FormatUint(next, 10)}, "limit": {strconv.Itoa(limit)}}.Encode()
	}
	writeJSON(w, out)
}

func (a *Handler) disconnect(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		plainError(w, http.StatusBadRequest, "malformed form: "+err.Error())
		return
	}
	sub, subscriber := r.PostForm.Get("sub"), r.PostForm.Get("subscriber")
	switch {
	case (sub == "") == (subscriber == ""):
		plainError(w, http.StatusBadRequest, "give exactly one of sub=<token subject> and subscriber=<subscriber identifier>")
	case sub != "":
		n := a.cfg.Mercure.Disconnect(r.Context(), sub)
		a.log.Info("admin: disconnected a token subject", "sub", sub, "streams", n)
		writeJSON(w, map[string]any{"sub": sub, "disconnected": n, "revoked": true})
	case !a.cfg.Mercure.SubscriptionsEnabled():
		plainError(w, http.StatusBadRequest, "subscribers have identifiers only with --subscriptions; disconnect by sub=<token subject> instead")
	default:
		ended, asked, err := a.cfg.Mercure.DisconnectSubscriber(r.Context(), subscriber)
		switch {
		case err != nil:
			a.log.Error("admin: disconnect a subscriber", "subscriber", subscriber, "err", err)
			plainError(w, http.StatusServiceUnavailable, "not on this node, and the other nodes could not be asked: "+err.Error())
		case ended:
			a.log.Info("admin: disconnected a subscriber", "subscriber", subscriber)
			writeJSON(w, map[string]any{"subscriber": subscriber, "disconnected": 1})
		case asked:
			// The node that serves it, if any, ends it on its next
			// round: accepted, not done.
			a.log.Info("admin: asked every node to disconnect a subscriber", "subscriber", subscriber)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			b, _ := json.Marshal(map[string]any{"subscriber": subscriber, "asked": "every node"})
			_, _ = w.Write(append(b, '\n'))
		default:
			plainError(w, http.StatusNotFound, "no open stream of subscriber "+subscriber+" on this node")
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		plainError(w, http.StatusInternalServerError, "encode: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	_, _ = w.Write(append(b, '\n'))
}

func plainError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}
