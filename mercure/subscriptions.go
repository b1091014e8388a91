package mercure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-hub/herald/hub"
)

// Active subscriptions (draft-08 "Active Subscriptions", and the draft-07
// form beside it): every subscription a subscriber makes is announced with
// a private update on the hub's reserved topic, when it begins and when it
// ends, and the subscriptions API lists those active now.
//
// Each subscription is written in the terms of the draft it was made in:
// one made with match or match_urlpattern is a draft-08 subscription
// (topic .../subscriptions/{match_type}/{match}/{subscriber}, event type
// "mercure", a JSON document of type "subscription"); one made with a
// draft-07 topic selector is a draft-07 one (topic
// .../subscriptions/{topic}/{subscriber}, a JSON-LD document of type
// "Subscription", no event type), so each draft's clients find the events
// and documents they know.
//
// The events are ordinary updates of the history: a client that reads the
// API and then subscribes to the events with the API's cursor misses
// nothing, and other nodes sharing the history receive them like any
// update.
//
// A subscriber that leaves and comes back within the grace period, with
// the same token subject and issuer and the same matchers, keeps its
// identifier, and nothing is announced: neither the end nor the new
// beginning. Only the end of a subscription nobody took up again is
// announced, once the grace period is over. Subscribers without a token
// subject cannot be recognized, so their ends are announced at once.

// DefaultSubscriptionGrace is Config.SubscriptionGrace's default.
const DefaultSubscriptionGrace = 10 * time.Second

// presenceAnnounceTimeout bounds the publication of the events of one
// subscriber's end, which no request waits for.
const presenceAnnounceTimeout = 10 * time.Second

// subForm is the draft a subscription was made in.
type subForm uint8

const (
	form8 subForm = iota
	form7
)

// activeSub is one subscription: one matcher of one subscriber.
type activeSub struct {
	form      subForm
	matchType string // draft-08: "exact" or "urlpattern"
	match     string // the matcher (draft-07: the topic selector)
	topic     string // the topic of its events, the id of its document
	payload   json.RawMessage
}

// presenceConn is one subscriber: a subscribe request and its stream.
type presenceConn struct {
	id      string // the subscriber identifier, urn:uuid:…
	key     string // who it is, to be recognized within the grace period; "" if it cannot be
	subject string // its token's sub
	subs    []activeSub
	// sub is its hub subscription, to end it on an administrator's
	// word; guarded by presence.mu, since a return takes it over.
	sub *hub.Subscriber
	// left is when its stream ended, zero while it is open.
	left time.Time
	// gen counts its grace periods, to tell the queues' entries of the
	// current one from those of periods it came back from.
	gen uint64
	// parkedKey is its key while it is parked in the cluster too, for
	// another node to take over (guarded by presence.mu).
	parkedKey string
}

// parkEntry is a subscriber in a queue of those in their grace period;
// it is stale once the subscriber came back (or left again).
type parkEntry struct {
	pc  *presenceConn
	gen uint64
}

func (e parkEntry) live() bool { return e.gen == e.pc.gen && !e.pc.left.IsZero() }

// presence keeps the active subscriptions of this node and announces
// their beginnings and ends.
type presence struct {
	h     *Handler
	grace time.Duration
	log   *slog.Logger
	ctx   context.Context // ends at close: bounds the announcements of ends
	stop  context.CancelFunc

	mu    sync.Mutex
	conns map[string]*presenceConn // by subscriber identifier, open or in their grace period
	// Subscribers in their grace period, by key for a returning one to be
	// found (oldest first), and all of them in the order they left, which
	// is the order their periods end in. A subscriber that returns stays
	// in both, stale, until it reaches the front: the queues cost O(1) per
	// subscriber, however many share a key.
	parked  map[string][]parkEntry
	leaving []parkEntry
	nParked int
	timer   *time.Timer // armed while some are parked
	closed  bool
	// file keeps, across a restart, the subscribers in their grace
	// period at close (Config.PresenceFile); kept is set when close kept
	// some there, took is set when New took some back.
	file       string
	kept, took bool
	wg         sync.WaitGroup // the timer's runs

	events  *prometheus.CounterVec
	resumed prometheus.Counter
}

func newPresence(h *Handler, grace time.Duration, reg prometheus.Registerer) (*presence, error) {
	p := &presence{
		h:      h,
		grace:  grace,
		log:    h.log,
		conns:  make(map[string]*presenceConn),
		parked: make(map[string][]parkEntry),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_subscription_events_total",
			Help: "Subscription events published (active=true: a subscription began, false: it ended), and those that could not be (result=failed).",
		}, []string{"active", "result"}),
		resumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_subscriptions_resumed_total",
			Help: "Subscribers that came back within the grace period and kept their identifier, so that neither their end nor their new beginning was announced.",
		}),
	}
	p.ctx, p.stop = context.WithCancel(context.Background())
	if reg != nil {
		active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_active_subscriptions",
			Help: "Active subscriptions on this node (one per matcher of each subscriber), those in their grace period included.",
		}, func() float64 { return float64(p.count()) })
		inGrace := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_subscribers_in_grace",
			Help: "Subscribers whose stream ended and whose end is not announced yet: they may come back within the grace period.",
		}, func() float64 { p.mu.Lock(); defer p.mu.Unlock(); return float64(p.nParked) })
		for _, c := range []prometheus.Collector{p.events, p.resumed, active, inGrace} {
			if err := reg.Register(c); err != nil {
				p.stop()
				return nil, err
			}
		}
	}
	return p, nil
}

// newSubscriberID draws a subscriber identifier: a random (version 4)
// UUID as a URN, never anything the client sent.
func newSubscriberID() string { return uuidV4() }

// join records the subscriptions of a new subscriber and announces them,
// or, when the same subscriber left within the grace period, takes its
// identifier up again and announces only what changed (a payload). It
// returns the subscriber's record, for leave.
func (p *presence) join(ctx context.Context, g *Grant, matchers []*hub.Matcher, sub *hub.Subscriber) (*presenceConn, error) {
	subs := make([]activeSub, 0, len(matchers))
	for _, m := range matchers {
		a := activeSub{match: m.Value()}
		switch m.Kind() {
		case hub.MatchSelector:
			a.form = form7
		case hub.MatchURLPattern:
			a.matchType = "urlpattern"
		default:
			a.matchType = "exact"
		}
		if pl, ok := g.Payload(m.Value()); ok {
			a.payload = pl
		}
		subs = append(subs, a)
	}
	key := presenceKey(g, subs)

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, hub.ErrShutdown
	}
	pc := p.takeParked(key)
	var clusterKey string
	if pc != nil {
		clusterKey, pc.parkedKey = pc.parkedKey, ""
	}
	p.mu.Unlock()
	c := p.h.cfg.Cluster
	if pc != nil && c != nil && clusterKey != "" {
		// Parked in the cluster too: another node may have taken it.
		if ok, err := c.Unpark(ctx, clusterKey, p.h.node, pc.id); err == nil && !ok {
			p.mu.Lock()
			delete(p.conns, pc.id) // it lives on there; that node deleted its records here
			p.mu.Unlock()
			pc = nil
		}
	}
	if pc == nil && c != nil && key != "" {
		if node, id, ok, err := c.TakeParked(ctx, key, p.h.node); err != nil {
			p.log.Warn("cluster: look for a returning subscriber on other nodes", "err", err)
		} else if ok {
			return p.takeOver(ctx, node, id, key, g, subs, sub), nil
		}
	}
	p.mu.Lock()
	if pc != nil {
		pc.sub = sub
		changed := make([]activeSub, 0)
		for i := range pc.subs {
			if string(pc.subs[i].payload) != string(subs[i].payload) {
				pc.subs[i].payload = subs[i].payload
				changed = append(changed, pc.subs[i])
			}
		}
		p.mu.Unlock()
		p.resumed.Inc()
		// The subscription is the same; its document is not.
		return pc, p.announce(ctx, pc.id, changed, true)
	}
	pc = &presenceConn{id: newSubscriberID(), key: key, subs: subs, sub: sub}
	if g != nil {
		pc.subject = g.Subject
	}
	for i := range pc.subs {
		pc.subs[i].topic = p.h.subscriptionTopic(&pc.subs[i], pc.id)
	}
	// Recorded before it is announced: a client that reads the API and
	// then follows the events from the API's cursor sees it either in the
	// list or in the events, maybe both, never in neither.
	p.conns[pc.id] = pc
	p.mu.Unlock()
	if err := p.announce(ctx, pc.id, pc.subs, true); err != nil {
		p.mu.Lock()
		delete(p.conns, pc.id)
		p.mu.Unlock()
		// Whatever was announced of it ends.
		_ = p.announce(p.ctx, pc.id, pc.subs, false)
		return nil, err
	}
	return pc, nil
}

// leave ends a subscriber's stream: its subscriptions end now, or, when it
// could come back and be recognized, at the end of the grace period unless
// it does.
func (p *presence) leave(pc *presenceConn) {
	if pc == nil {
		return
	}
	p.mu.Lock()
	if pc.key == "" || p.grace <= 0 || p.closed {
		delete(p.conns, pc.id)
		p.mu.Unlock()
		p.end(pc)
		return
	}
	pc.left = time.Now()
	pc.gen++
	e := parkEntry{pc, pc.gen}
	p.parked[pc.key] = append(p.parked[pc.key], e)
	p.leaving = append(p.leaving, e)
	p.nParked++
	if p.timer == nil {
		p.arm(p.grace)
	}
	key, until := pc.key, pc.left.Add(p.grace)
	p.mu.Unlock()
	if c := p.h.cfg.Cluster; c != nil {
		// The other nodes may take it over if it comes back there.
		ctx, cancel := context.WithTimeout(p.ctx, presenceAnnounceTimeout)
		err := c.Park(ctx, key, p.h.node, pc.id, until)
		cancel()
		if err != nil {
			p.log.Warn("cluster: park a subscriber for the other nodes", "err", err)
			return
		}
		p.mu.Lock()
		still := pc.left.Equal(until.Add(-p.grace)) // not back meanwhile
		if still {
			pc.parkedKey = key
		}
		p.mu.Unlock()
		if !still {
			// Back here already: no other node may take it over.
			ctx, cancel := context.WithTimeout(p.ctx, presenceAnnounceTimeout)
			_, _ = c.Unpark(ctx, key, p.h.node, pc.id)
			cancel()
		}
	}
}

// takeOver makes a subscriber parked on another node, come back here,
// this node's: it keeps its identifier, its records move here, and
// nothing is announced (the node it left finds it gone when its period
// ends, and says nothing either).
func (p *presence) takeOver(ctx context.Context, node, id, key string, g *Grant, subs []activeSub, sub *hub.Subscriber) *presenceConn {
	pc := &presenceConn{id: id, key: key, subs: subs, sub: sub}
	if g != nil {
		pc.subject = g.Subject
	}
	for i := range pc.subs {
		pc.subs[i].topic = p.h.subscriptionTopic(&pc.subs[i], id)
	}
	p.mu.Lock()
	p.conns[id] = pc
	p.mu.Unlock()
	c := p.h.cfg.Cluster
	for i := range pc.subs {
		a := &pc.subs[i]
		doc, err := json.Marshal(a.document(id, true, true))
		if err == nil {
			err = c.PresenceSet(ctx, p.h.node, a.topic, doc)
		}
		if err == nil {
			err = c.PresenceDelete(ctx, node, a.topic)
		}
		if err != nil {
			p.log.Warn("cluster: move a returning subscriber's record", "from", node, "err", err)
		}
	}
	p.resumed.Inc()
	return pc
}

// takeParked returns the subscriber of key that left first and is still
// in its grace period, taken out of it, or nil; p.mu is held.
func (p *presence) takeParked(key string) *presenceConn {
	if key == "" {
		return nil
	}
	q := p.parked[key]
	for len(q) > 0 && !q[0].live() {
		q = q[1:]
	}
	if len(q) == 0 {
		delete(p.parked, key)
		return nil
	}
	pc := q[0].pc
	if q = q[1:]; len(q) == 0 {
		delete(p.parked, key)
	} else {
		p.parked[key] = q
	}
	pc.left = time.Time{}
	p.nParked--
	return pc
}

// arm starts the timer for d; p.mu is held.
func (p *presence) arm(d time.Duration) {
	p.wg.Add(1)
	p.timer = time.AfterFunc(d, p.expire)
}

// expire announces the end of every subscriber whose grace period is
// over, and arms the timer again for the next one.
func (p *presence) expire() {
	defer p.wg.Done()
	now := time.Now()
	var ended []*presenceConn
	p.mu.Lock()
	p.timer = nil
	for len(p.leaving) > 0 {
		e := p.leaving[0]
		pc := e.pc
		if !e.live() { // came back
			p.leaving = p.leaving[1:]
			continue
		}
		if wait := pc.left.Add(p.grace).Sub(now); wait > 0 {
			if !p.closed {
				p.arm(wait)
			}
			break
		}
		p.leaving = p.leaving[1:]
		if q := p.parked[pc.key]; len(q) > 0 && q[0] == e {
			// The oldest of its key, as a rule: the key's queue
			// drops it now rather than when someone returns.
			if len(q) == 1 {
				delete(p.parked, pc.key)
			} else {
				p.parked[pc.key] = q[1:]
			}
		}
		ended = append(ended, p.drop(pc))
	}
	p.mu.Unlock()
	for _, pc := range ended {
		p.end(pc)
	}
}

// drop ends pc's grace period here: it leaves every queue (lazily) and
// the node's list; p.mu is held. It returns pc.
func (p *presence) drop(pc *presenceConn) *presenceConn {
	pc.left = time.Time{}
	p.nParked--
	delete(p.conns, pc.id)
	return pc
}

// end announces the end of pc's subscriptions, unless another node took
// it over from its grace period.
func (p *presence) end(pc *presenceConn) {
	ctx, cancel := context.WithTimeout(p.ctx, presenceAnnounceTimeout)
	defer cancel()
	p.mu.Lock()
	key := pc.parkedKey
	pc.parkedKey = ""
	p.mu.Unlock()
	if c := p.h.cfg.Cluster; c != nil && key != "" {
		if ok, err := c.Unpark(ctx, key, p.h.node, pc.id); err == nil && !ok {
			return // it lives on another node, which holds its records now
		}
	}
	if err := p.announce(ctx, pc.id, pc.subs, false); err != nil {
		p.log.Warn("could not announce the end of a subscription", "subscriber", pc.id, "err", err)
	}
}

// close announces, at once, the end of every subscriber in its grace
// period; new subscribers are refused and those still streaming announce
// their ends without one. The hub must still take publications.
func (p *presence) close() {
	p.mu.Lock()
	p.closed = true
	if p.timer != nil && p.timer.Stop() {
		p.wg.Done()
	}
	p.timer = nil
	var ended []*presenceConn
	for _, e := range p.leaving {
		if e.live() {
			ended = append(ended, p.drop(e.pc))
		}
	}
	clear(p.parked)
	p.leaving = nil
	p.mu.Unlock()
	p.wg.Wait()
	if p.file != "" && len(ended) > 0 {
		if err := saveKept(p.file, p.h.node, ended, time.Now()); err == nil {
			p.log.Info("kept the subscribers in their grace period for the next start", "subscribers", len(ended), "file", p.file)
			ended = nil
			p.kept = true
		} else {
			p.log.Warn("could not keep the subscribers for the next start; announcing their ends", "err", err)
		}
	}
	for _, pc := range ended {
		p.end(pc)
	}
	p.stop()
}

// announce publishes one event per subscription in subs.
func (p *presence) announce(ctx context.Context, subscriber string, subs []activeSub, active bool) error {
	state := "false"
	if active {
		state = "true"
	}
	var errs []error
	for i := range subs {
		a := &subs[i]
		data, err := json.Marshal(a.document(subscriber, active, true))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// The shared record changes first, as the local one did: a
		// client that reads the list, then follows the events from its
		// cursor, sees the change in one or the other, maybe both.
		if c := p.h.cfg.Cluster; c != nil {
			var err error
			if active {
				err = c.PresenceSet(ctx, p.h.node, a.topic, data)
			} else {
				err = c.PresenceDelete(ctx, p.h.node, a.topic)
			}
			if err != nil {
				p.events.WithLabelValues(state, "failed").Inc()
				errs = append(errs, fmt.Errorf("record the subscription for the cluster: %w", err))
				continue
			}
		}
		if err := p.h.publishSubscriptionEvent(ctx, a.form, a.topic, data); err != nil {
			p.events.WithLabelValues(state, "failed").Inc()
			errs = append(errs, err)
			continue
		}
		p.events.WithLabelValues(state, "published").Inc()
	}
	return errors.Join(errs...)
}

// subscriptionEventType is the SSE event type of draft-08 subscription
// events, which publishers cannot use.
const subscriptionEventType = "mercure"

// count returns the number of active subscriptions.
func (p *presence) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pc := range p.conns {
		n += len(pc.subs)
	}
	return n
}

// snapshot returns the active subscriptions of the given form that keep
// says to, with their subscribers, sorted by topic: those of the whole
// cluster when the hub has one, else this node's.
func (p *presence) snapshot(ctx context.Context, form subForm, keep func(a *activeSub, subscriber string) bool) ([]subEntry, error) {
	if c := p.h.cfg.Cluster; c != nil {
		docs, err := c.PresenceList(ctx)
		if err != nil {
			return nil, err
		}
		var out []subEntry
		for id, doc := range docs {
			e, ok := parseSubDoc(id, doc)
			if ok && e.sub.form == form && keep(&e.sub, e.subscriber) {
				out = append(out, e)
			}
		}
		slices.SortFunc(out, func(a, b subEntry) int { return strings.Compare(a.sub.topic, b.sub.topic) })
		return out, nil
	}
	p.mu.Lock()
	var out []subEntry
	for _, pc := range p.conns {
		for i := range pc.subs {
			a := &pc.subs[i]
			if a.form == form && keep(a, pc.id) {
				out = append(out, subEntry{sub: *a, subscriber: pc.id})
			}
		}
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b subEntry) int { return strings.Compare(a.sub.topic, b.sub.topic) })
	return out, nil
}

// parseSubDoc reads back a subscription document a node recorded in the
// cluster under id; ok is false for one this version cannot read.
func parseSubDoc(id string, doc []byte) (subEntry, bool) {
	var d struct {
		Type       string          `json:"type"`
		MatchType  string          `json:"match_type"`
		Match      string          `json:"match"`
		Topic      string          `json:"topic"`
		Subscriber string          `json:"subscriber"`
		Payload    json.RawMessage `json:"payload"`
	}
	if json.Unmarshal(doc, &d) != nil || d.Subscriber == "" {
		return subEntry{}, false
	}
	e := subEntry{subscriber: d.Subscriber, sub: activeSub{topic: id, payload: d.Payload}}
	switch d.Type {
	case "subscription":
		e.sub.form, e.sub.matchType, e.sub.match = form8, d.MatchType, d.Match
	case "Subscription":
		e.sub.form, e.sub.match = form7, d.Topic
	default:
		return subEntry{}, false
	}
	return e, true
}

type subEntry struct {
	sub        activeSub
	subscriber string
}

// presenceKey tells a subscriber from the others across reconnections:
// its token's issuer and subject, its matchers and their draft. It is
// empty for a subscriber without a subject, which cannot be recognized.
func presenceKey(g *Grant, subs []activeSub) string {
	if g == nil || g.Subject == "" {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%q %q", g.Issuer, g.Subject)
	for _, a := range subs {
		fmt.Fprintf(&b, " %d %q %q", a.form, a.matchType, a.match)
	}
	return b.String()
}

// document is the subscription's JSON document, in its draft's form.
// withContext adds draft-07's @context (which a collection carries once).
func (a *activeSub) document(subscriber string, active, withContext bool) any {
	if a.form == form7 {
		d := subDoc7{ID: a.topic, Type: "Subscription", Topic: a.match, Subscriber: subscriber, Active: active, Payload: a.payload}
		if withContext {
			d.Context = jsonLDContext
		}
		return d
	}
	return subDoc8{ID: a.topic, Type: "subscription", MatchType: a.matchType, Match: a.match, Subscriber: subscriber, Active: active, Payload: a.payload}
}

// jsonLDContext is draft-07's fixed @context.
const jsonLDContext = "https://mercure.rocks/"

type subDoc8 struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	MatchType  string          `json:"match_type"`
	Match      string          `json:"match"`
	Subscriber string          `json:"subscriber"`
	Active     bool            `json:"active"`
	Payload    json.RawMessage `json:"payload,omitempty"`
}

type subDoc7 struct {
	Context    string          `json:"@context,omitempty"`
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Topic      string          `json:"topic"`
	Subscriber string          `json:"subscriber"`
	Active     bool            `json:"active"`
	Payload    json.RawMessage `json:"payload,omitempty"`
}

// watchesPresence reports whether a subscriber with these selectors may
// receive subscription events, whose topics all begin with the hub's
// subscriptions path. It does not depend on --subscriptions: another node
// of the cluster may announce them.
func (h *Handler) watchesPresence(ms []*hub.Matcher) bool {
	prefix := h.subsPath + "/"
	for _, m := range ms {
		if m.MayMatchPrefix(prefix) {
			return true
		}
	}
	return false
}

// subscriptionTopic is the topic of a's events: the hub's path, then
// /subscriptions/{match_type}/{match}/{subscriber} (draft-08) or
// /subscriptions/{topic}/{subscriber} (draft-07), each variable
// percent-encoded once, whole.
func (h *Handler) subscriptionTopic(a *activeSub, subscriber string) string {
	b := []byte(h.subsPath)
	if a.form == form8 {
		b = append(b, '/')
		b = appendPathVar(b, a.matchType)
	}
	b = append(b, '/')
	b = appendPathVar(b, a.match)
	b = append(b, '/')
	b = appendPathVar(b, subscriber)
	return string(b)
}

// appendPathVar appends s as RFC 6570 simple string expansion does:
// every byte but the unreserved characters percent-encoded.
func appendPathVar(b []byte, s string) []byte {
	const hexUpper = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hexUpper[c>>4], hexUpper[c&15])
	}
	return b
}

// reannounce records and announces again, as active, every subscription
// of this node, and returns the number of subscribers: for a node the
// cluster took for dead and ended.
func (p *presence) reannounce(ctx context.Context) int {
	type one struct {
		id   string
		subs []activeSub
	}
	p.mu.Lock()
	all := make([]one, 0, len(p.conns))
	for _, pc := range p.conns {
		all = append(all, one{pc.id, slices.Clone(pc.subs)})
	}
	p.mu.Unlock()
	for _, o := range all {
		if err := p.announce(ctx, o.id, o.subs, true); err != nil {
			p.log.Warn("could not announce a subscription again", "subscriber", o.id, "err", err)
		}
	}
	return len(all)
}

// disconnect ends the stream of the subscriber id, announcing its end at
// once, and reports whether it had an open stream.
func (p *presence) disconnect(id string) bool {
	p.mu.Lock()
	pc := p.conns[id]
	if pc == nil || !pc.left.IsZero() || pc.sub == nil {
		p.mu.Unlock()
		return false
	}
	pc.key = "" // no grace: its end is announced as soon as the stream ends
	s := pc.sub
	p.mu.Unlock()
	s.End(hub.ErrDisconnected)
	return true
}

// forget makes the subscribers of the token subject sub unrecognizable,
// so that the ends of their streams are announced at once, without a
// grace period, and those already in theirs end now.
func (p *presence) forget(sub string) {
	p.mu.Lock()
	var ended []*presenceConn
	for _, pc := range p.conns {
		if pc.subject != sub {
			continue
		}
		pc.key = ""
		if !pc.left.IsZero() {
			ended = append(ended, p.drop(pc))
		}
	}
	p.mu.Unlock()
	for _, pc := range ended {
		p.end(pc)
	}
}
