// Package hub is herald's core, free of HTTP: updates, topic matchers, the
// subscription index, fan-out, the replay-to-live handover and the Engine
// interface that stores the history.
//
// An update flows from Publish to the engine, which makes it durable and
// hands it back through its live feed; one dispatcher goroutine looks up the
// subscribers that can match it in the index and offers each a pointer to
// the shared, already encoded frame. Offering never blocks: a subscriber's
// queue is bounded in bytes, and a subscriber over its budget is
// disconnected so it can resume from history. Each subscriber's writer
// sends what is queued in one write; on a busy hub it first waits a few
// milliseconds for more (write pacing, pace.go), since the system call per
// write is then most of the CPU.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/herald-hub/herald/sse"
)

// Config configures a Hub. The zero value of every field but Engine means
// the default.
type Config struct {
	// Engine stores the history and feeds appended updates back. Required.
	Engine Engine
	// Logger receives the hub's logs; nil discards them.
	Logger *slog.Logger
	// Metrics records the hub's activity; nil records nothing.
	Metrics *Metrics
	// QueueBytes is each subscriber's queue budget. A subscriber whose
	// queued frames would exceed it is disconnected. Default 4 MiB.
	QueueBytes int
	// Heartbeat is the idle time after which a stream gets a comment line.
	// Default 15s; negative disables heartbeats.
	Heartbeat time.Duration
	// WriteTimeout bounds every write and flush to a subscriber. Default 10s.
	WriteTimeout time.Duration
	// WriteDelay is the least time between two writes to one stream: an
	// update that comes sooner waits, up to the delay, and goes out with
	// whatever else arrived meanwhile, in one system call. Zero (the
	// default) sets the delay by load: none while the hub offers fewer
	// than 20,000 frames per second per core to its subscribers, rising
	// to 50ms at 80,000 (see pace.go). A positive value is a fixed delay;
	// a negative one writes every update as soon as it is queued.
	WriteDelay time.Duration
	// Liveness is how often streams that can be probed (Prober) are
	// checked for a departed client. Default 2s; negative disables.
	Liveness time.Duration
	// ReplayBatch is how many updates a replay reads from the engine at a
	// time. Default 1024.
	ReplayBatch int
	// InboxBytes bounds the updates the engine's feed has handed over and
	// the dispatcher has not offered yet. Past it the feed's batches are
	// dropped and the dispatcher reads them back from the engine, so that
	// appends never wait for fan-out. Default 16 MiB.
	InboxBytes int
	// RandomIDs makes generated ids random (UUIDv4) instead of
	// time-ordered (UUIDv7): they then reveal nothing, at a cost in
	// durable publish throughput (see NewID).
	RandomIDs bool
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Matchers is the table of compiled matchers the hub's subscriptions
	// share; nil gives the hub a table of its own. Give the token
	// validator the same table so that grants share the copies too.
	Matchers *Matchers
	// MaxPatterns bounds the distinct patterns (URL patterns and URI
	// templates; exact topics and the wildcard are free) that the hub's
	// subscriptions hold together, and MaxPatternsPerSubject those that
	// the subscriptions of one token subject hold (anonymous ones, and
	// tokens without sub, count as one subject). A subscription that
	// would go over is refused with a *BudgetError. Zero means the
	// defaults (DefaultMaxPatterns, DefaultMaxPatternsPerSubject);
	// negative means no limit.
	MaxPatterns, MaxPatternsPerSubject int
	// OverloadLag and OverloadWait say when the hub is overloaded (see
	// Overloaded): the dispatcher has had an update waiting longer than
	// OverloadLag, or one in ten of its goroutines waited for a CPU
	// longer than OverloadWait (the 90th percentile over the last pacing
	// window). Zero means the defaults (DefaultOverloadLag,
	// DefaultOverloadWait); negative turns that test off.
	OverloadLag, OverloadWait time.Duration
	// Tracer, when set, traces what the hub does for a request: a
	// herald.append span around Engine.Append, a child of the span in
	// Publish's context; a herald.dispatch span when the dispatcher offers
	// an update this hub published (with the publisher's span as parent),
	// even though that happens later on the dispatcher's goroutine; and a
	// herald.replay span from a subscription's resume point to its
	// handover to live updates. Nil (the default) traces nothing, at no
	// cost.
	Tracer trace.Tracer
}

// The defaults of Config.OverloadLag and OverloadWait. On two cores shared
// with its load generator, a node serving 500 subscribers at 20 updates/s
// saw 90th percentiles of its CPU waits of 1-15ms a window; while 30,000
// connections came at it in a few seconds, 25-30ms, and its subscribers'
// latency several times what it was. The median does not tell the two
// apart: the storm's fresh goroutines mostly run at once.
const (
	DefaultOverloadLag  = time.Second
	DefaultOverloadWait = 20 * time.Millisecond
)

// overloadHold is how long the hub stays overloaded after the last sign
// of it, so that shedding does not flip on and off with every window.
const overloadHold = 2 * time.Second

func (c *Config) fill() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 4 << 20
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.Liveness == 0 {
		c.Liveness = 2 * time.Second
	}
	if c.ReplayBatch <= 0 {
		c.ReplayBatch = 1024
	}
	if c.InboxBytes <= 0 {
		c.InboxBytes = defaultInboxBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.OverloadLag == 0 {
		c.OverloadLag = DefaultOverloadLag
	}
	if c.OverloadWait == 0 {
		c.OverloadWait = DefaultOverloadWait
	}
}

// Errors that end a subscription. They say why the stream was closed.
var (
	ErrSlowSubscriber = errors.New("subscriber queue over budget")
	ErrExpired        = errors.New("subscriber token expired")
	ErrShutdown       = errors.New("hub shutting down")
	ErrGone           = errors.New("subscriber went away")
	// ErrLost ends a subscription that may have missed updates: the
	// history dropped them before they could be delivered, or was
	// replaced (a new epoch). A client that reconnects is told, since its
	// last id is no longer in the history.
	ErrLost = errors.New("updates lost before delivery: history trimmed or replaced")
)

// Hub fans updates out to subscribers. It is safe for concurrent use.
type Hub struct {
	cfg    Config
	engine Engine
	log    *slog.Logger
	m      *Metrics

	inbox  inbox
	ctx    context.Context // ends at Close; bounds the dispatcher's reads
	cancel context.CancelFunc
	done   chan struct{}
	wg     sync.WaitGroup

	idx index
	// lastDispatched is the Seq of the last update the dispatcher has
	// offered (or skipped). It changes under idx.mu read-locked (dispatch)
	// or locked (skip, newEpoch), so registrations are ordered against it.
	lastDispatched atomic.Uint64
	// lastID is the ID of the update at lastDispatched, nil when the
	// dispatcher has not offered it itself (at start, after a skip or a
	// new epoch): LastEventID looks it up then.
	lastID atomic.Pointer[string]
	// epoch is the log lastDispatched counts in. The dispatcher writes it
	// with idx.mu locked; others read it with idx.mu held.
	epoch uint64
	// origin is where the log of epoch began, as this hub saw it begin
	// (the After of the batch that opened it); originKnown says whether
	// it did, or started in that log. Guarded like epoch.
	origin      uint64
	originKnown bool
	// feedEpoch is the epoch of the feed's last batch, for the inbox.
	feedEpoch atomic.Uint64
	pace      pacer
	subs      registry
	clock     clock
	probeBuf  []*Subscriber // reused by the clock goroutine only

	overUntil atomic.Int64 // unix nanos until which the hub counts as overloaded

	// Totals since start, for Counts.
	nPublished, nOffered atomic.Uint64

	closeOnce sync.Once
	draining  atomic.Bool // no new subscriptions
	stopped   atomic.Bool // no new publications
}

// New starts a hub over cfg.Engine. The hub owns two goroutines, the
// dispatcher and the clock; Close stops them.
func New(cfg Config) (*Hub, error) {
	if cfg.Engine == nil {
		return nil, errors.New("hub: no engine")
	}
	cfg.fill()
	h := &Hub{
		cfg:    cfg,
		engine: cfg.Engine,
		log:    cfg.Logger,
		m:      cfg.Metrics,
		done:   make(chan struct{}),
	}
	h.idx.init(&cfg)
	h.inbox.init(cfg.InboxBytes)
	h.pace.init(cfg.WriteDelay)
	h.subs.init()
	h.clock.init()
	head, err := h.engine.Listen(h.onAppend)
	if err != nil {
		return nil, fmt.Errorf("hub: listen to the history: %w", err)
	}
	h.epoch = head.Epoch
	h.feedEpoch.Store(head.Epoch)
	h.lastDispatched.Store(head.Seq)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.m.bindHub(h)
	h.wg.Add(2)
	go h.dispatchLoop()
	go h.clockLoop()
	return h, nil
}

// Message is what a publisher sends.
type Message struct {
	// ID is the event id; empty means the hub generates one.
	ID string
	// Topics holds the canonical topic first, then alternate topics.
	Topics []string
	// Private restricts delivery to authorized subscribers.
	Private bool
	// Presence marks a subscription event, retained apart from the
	// application's updates (Update.Presence).
	Presence bool
	// Type, Data and Retry become the SSE event, data and retry fields.
	Type, Data, Retry string
}

// Publish encodes m once, appends it to the engine and returns the stored
// update once it is durable. The caller has validated m; Publish still
// refuses fields that would break the SSE framing.
func (h *Hub) Publish(ctx context.Context, m Message) (*Update, error) {
	if h.stopped.Load() {
		return nil, ErrShutdown
	}
	if len(m.Topics) == 0 {
		return nil, errors.New("hub: update has no topic")
	}
	if m.ID == "" {
		if h.cfg.RandomIDs {
			m.ID = NewRandomID()
		} else {
			m.ID = NewID()
		}
	}
	frame, err := sse.Encode(&sse.Event{ID: m.ID, Type: m.Type, Data: m.Data, Retry: m.Retry})
	if err != nil {
		return nil, err
	}
	u := &Update{ID: m.ID, Topics: m.Topics, Private: m.Private, Presence: m.Presence, Time: h.cfg.Now(), Frame: frame}
	var span trace.Span
	if h.cfg.Tracer != nil {
		ctx, span = h.startAppend(ctx, u)
	}
	start := time.Now()
	err = h.engine.Append(ctx, u)
	if span != nil {
		endAppend(span, u, err)
	}
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	h.m.published(time.Since(start))
	h.nPublished.Add(1)
	return u, nil
}

// dispatch offers u to every subscriber the index says can match it. The
// index read lock orders it against registrations: a subscriber registered
// after lastDispatched moved past u starts beyond u, one registered before
// is found here. Nothing in this path allocates per subscriber. It returns
// how many subscribers it offered u to, for the pacer.
func (h *Hub) dispatch(u *Update) int {
	var span trace.Span
	if u.span != nil && h.cfg.Tracer != nil {
		span = h.startDispatch(u)
	}
	h.idx.mu.RLock()
	h.lastDispatched.Store(u.Seq)
	h.lastID.Store(&u.ID)
	n := h.idx.match(u, (*Subscriber).offer)
	h.nOffered.Add(uint64(n))
	h.idx.mu.RUnlock()
	if span != nil {
		endDispatch(span, u, n)
	}
	return n
}

// Close ends every subscription with ErrShutdown, stops the hub's
// goroutines and waits for them. It does not close the engine. Close is
// safe to call more than once.
func (h *Hub) Close() {
	h.closeOnce.Do(func() {
		h.stopped.Store(true)
		h.EndStreams()
		h.cancel()
		close(h.done)
		h.wg.Wait()
	})
}

// EndStreams closes every live subscription with ErrShutdown so that
// clients reconnect (to this hub once it is back, or to another node) and
// resume. New subscriptions are refused from then on; publications are
// still accepted until Close, so in-flight publishes finish.
func (h *Hub) EndStreams() {
	h.draining.Store(true)
	h.subs.each(func(s *Subscriber) { s.end(ErrShutdown) })
}

// WriteDelay returns the least time between two writes to one stream in
// force now: Config.WriteDelay when it is fixed, else what the load set.
func (h *Hub) WriteDelay() time.Duration { return h.pace.current(h.cfg.Now().UnixNano()) }

// DispatchLag is how long the oldest update handed over by the engine's
// feed has waited to be offered to subscribers; zero when none waits.
func (h *Hub) DispatchLag() time.Duration {
	return h.dispatchLag(h.cfg.Now().UnixNano())
}

func (h *Hub) dispatchLag(now int64) time.Duration {
	at := h.inbox.oldest.Load()
	if at == 0 || now < at {
		return 0
	}
	return time.Duration(now - at)
}

// SchedWait is the median time the process's goroutines waited for a CPU
// over the last pacing window (zero when nothing was dispatched lately).
func (h *Hub) SchedWait() time.Duration {
	m, _ := h.pace.schedWait(h.cfg.Now().UnixNano())
	return m
}

func (h *Hub) tailWait(now int64) time.Duration {
	_, p90 := h.pace.schedWait(now)
	return p90
}

// Overloaded reports whether the hub is past what it can serve well: its
// dispatcher has had an update waiting for longer than OverloadLag, or one
// in ten of its goroutines waits longer than OverloadWait for a CPU, now or
// within the last two seconds. The subscriptions it has then need
// everything it has: a caller turns new ones away (herald resets new
// connections at accept, and sends subscriptions on open ones away with a
// retry hint) before those suffer.
func (h *Hub) Overloaded() bool {
	now := h.cfg.Now().UnixNano()
	over := (h.cfg.OverloadLag > 0 && h.dispatchLag(now) > h.cfg.OverloadLag) ||
		(h.cfg.OverloadWait > 0 && h.tailWait(now) > h.cfg.OverloadWait)
	if over {
		h.overUntil.Store(now + int64(overloadHold))
		return true
	}
	until := h.overUntil.Load()
	return now < until && until-now <= int64(overloadHold) // a clock stepped back does not hold it
}

// LastEventID returns the ID of the last update the dispatcher has handed
// to subscribers, or EarliestID when there is none: the cursor from which
// a client that has just read the hub's state follows what changes after
// it, without a gap. When that update is no longer retained, it returns
// EarliestID too: resuming from it repeats what the history still holds,
// which loses nothing.
func (h *Hub) LastEventID(ctx context.Context) (string, error) {
	if id := h.lastID.Load(); id != nil {
		return *id, nil
	}
	h.idx.mu.RLock()
	seq, epoch := h.lastDispatched.Load(), h.epoch
	h.idx.mu.RUnlock()
	if seq == 0 {
		return EarliestID, nil
	}
	r, err := h.engine.Read(ctx, Position{Epoch: epoch, Seq: seq - 1}, 1)
	if errors.Is(err, ErrEpoch) {
		return EarliestID, nil
	}
	if err != nil {
		return "", err
	}
	if len(r.Updates) == 1 && r.Updates[0].Seq == seq {
		return r.Updates[0].ID, nil
	}
	return EarliestID, nil
}

// Subscribers returns the number of open subscriptions.
func (h *Hub) Subscribers() int { return h.subs.len() }

// Ready returns nil while the hub takes subscriptions and publications,
// else why not: it is draining (ErrShutdown), or its engine reports that
// it cannot take appends (Health).
func (h *Hub) Ready() error {
	if h.draining.Load() {
		return ErrShutdown
	}
	if hc, ok := h.engine.(Health); ok {
		return hc.Healthy()
	}
	return nil
}

// Draining reports whether EndStreams or Close was called.
func (h *Hub) Draining() bool { return h.draining.Load() }
