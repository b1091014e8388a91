// Package redis is the engine for more than one node: a history on Redis
// Streams that every herald node appends to and reads from, with a live
// feed on each node, so that any node takes publishes, every node delivers
// them in the same order, and a subscriber resumes on any node.
//
// One stream holds the log. A Lua script appends a batch of updates at a
// time: it gives them the next Seqs (the stream entry id is "<Seq>-0"),
// indexes their ids in a hash and trims what retention drops, all
// atomically, so that nodes never race for a Seq and Lookup never finds a
// trimmed entry. Concurrent appends on a node share scripts (group commit):
// a few workers each take whatever has queued while the others wait on
// Redis. Each node's feed waits on the stream with XREAD BLOCK and reads
// what it has not fed with a script that also checks that the log is still
// the one it fed from, so after any reconnect it goes on from the last
// update it fed, and a log replaced under it (Redis restarted empty,
// flushed, or failed over to a replica that missed writes) becomes a new
// epoch instead of a silent renumbering.
//
// Presence updates are retained apart (hub.Retention): the script lists
// them beside the log, with what dropping one takes, so that it finds the
// oldest of them at once and deletes it from the middle of the stream with
// XDEL without reading it, while retention of the others cuts the front
// of the stream, taking the presence updates before the cut with it. Each drop raises a watermark of its kind, the
// highest Seq dropped, in the same script; a read takes them with its
// entries, and a position below one is a gap of that kind (Range.Gap,
// Range.PresenceGap). Trimming costs a few commands per entry dropped,
// whichever kind, never a walk through what stays. Every node's feed
// reads an update before it goes (Options.Grace); a node further behind
// than that passes over the presence updates it missed, which are gone
// for every reader, and meets missed updates of the other kind as a skip.
//
// An entry deleted from the middle of a stream keeps its bytes until every
// entry of its stream node is gone, so under a churn of presence updates a
// retained update may hold up to a node's worth of memory. Measured with
// nine presence updates in ten and 200-byte frames: 3.5 KB per retained
// entry against 0.4 KB without churn at Redis's default
// stream-node-max-bytes (4096); at 512, 0.9 KB with or without churn.
//
// Beside the log, under the same hash tag, the engine keeps the state the
// nodes share (hub.Cluster, cluster.go): each node's active subscriptions,
// its lease, the claims on dead nodes, and revocations.
//
// The client is github.com/redis/go-redis/v9. Measured against rueidis on
// this engine's own scripts (Redis 7.0, 2 cores): on the engine's shape,
// four workers sending 64 updates per script, rueidis was 6 to 16% faster
// (within the run-to-run spread) because Redis spends 9 to 12 µs of CPU
// per update running the script and either client about 2; rueidis's
// clear wins (2.7 times the throughput of unbatched concurrent calls, a
// third of the client CPU decoding reads) are on patterns the engine
// avoids by batching. go-redis parses standalone, Sentinel and Cluster
// URLs, and with retries off it never sends an append twice, which the
// engine relies on.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/herald-hub/herald/hub"
)

// Defaults for Options.
const (
	DefaultPrefix      = "herald"
	DefaultMaxCount    = 100_000
	DefaultWaitTimeout = time.Second
	DefaultTimeout     = time.Second
	DefaultWorkers     = 1
	DefaultMaxBatch    = 256
	// DefaultGrace is how long an appended update stays whatever
	// retention says, so that every node's feed reads it first.
	DefaultGrace = 2 * time.Second
)

// Options configures an Engine. The zero value is valid.
type Options struct {
	// Retention bounds the history: MaxCount and MaxAge both zero means
	// DefaultMaxCount, MaxPresence zero hub.DefaultMaxPresence.
	Retention hub.Retention
	// Prefix names the hub's keys, so that several hubs share one Redis
	// or one Cluster. Every key is "{Prefix}:…": one hash slot per hub.
	Prefix string
	// Wait is how many replicas must have an append (Redis WAIT) before
	// it is acknowledged; zero means the master alone.
	Wait int
	// WaitTimeout bounds the WAIT; an append whose replicas do not answer
	// in time fails. Zero means DefaultWaitTimeout.
	WaitTimeout time.Duration
	// Timeout bounds each round trip to Redis (dial, read, write), so
	// that an unreachable Redis fails publishes fast. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Workers is how many batches of appends a node has in flight at
	// once; zero means DefaultWorkers, one. Redis runs scripts one at a
	// time anyway, and a single batch in flight carries everything that
	// queued during the last round trip: with 64 publishers on one node
	// that was 21 updates a script and about 30% more publishes/s than
	// four batches of 7 in flight, at a lower P99 (BENCHMARKS.md).
	Workers int
	// MaxBatch bounds how many updates share one script; zero means
	// DefaultMaxBatch.
	MaxBatch int
	// Logger receives what the engine cannot return to a caller (the feed
	// losing Redis and finding it again), as is: the caller names the
	// group. Nil discards it.
	Logger *slog.Logger
	// Registerer receives the engine's metrics (herald_redis_*); nil
	// means none. Close unregisters them.
	Registerer prometheus.Registerer
	// Now is the clock for retention by age and for the end of
	// revocations (hub.Cluster); nil means time.Now.
	Now func() time.Time
	// Grace is how long an update stays after its append whatever the
	// retention, of either kind, so that a node's feed reads it before it
	// goes: a node whose feed falls further behind than this (a long
	// pause, a lost connection) may find the oldest of what it missed
	// trimmed, and ends its live streams for the gap, or presence updates
	// it missed dropped, which it passes over. Zero means DefaultGrace.
	Grace time.Duration
	// MaxPresence bounds the subscriptions PresenceList reads at once
	// (hub.Cluster): with more recorded it fails with ErrTooMany. Zero
	// means DefaultMaxPresence. How many presence updates the log keeps
	// is Retention.MaxPresence.
	MaxPresence int
}

// Errors the engine returns.
var (
	// ErrUnavailable is returned by Append while Redis cannot be reached
	// (the circuit breaker is open). Nothing of the update was sent.
	ErrUnavailable = errors.New("redis: history unavailable")
	// ErrNotReplicated is returned by Append when fewer replicas than
	// Options.Wait confirmed the write in time. The update is on the
	// master and may still reach the replicas: it was not acknowledged,
	// and it may appear in the history.
	ErrNotReplicated = errors.New("redis: update not confirmed by enough replicas")
)

// Engine is a hub.Engine on Redis Streams.
type Engine struct {
	rdb      goredis.UniversalClient
	waiter   goredis.UniversalClient // the feed's blocking reads: Close closes it to end one
	topology string
	keys     keys
	maxCount int
	maxAge   time.Duration
	keepPres int // hub.Retention.MaxPresence
	wait     int
	waitTime time.Duration
	maxBatch int
	grace    int64 // ms
	timeout  time.Duration
	maxPres  int
	now      func() time.Time
	log      *slog.Logger
	m        *metrics
	breaker  *gobreaker.CircuitBreaker[struct{}]

	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the feed and the trimmer
	workers sync.WaitGroup // the append workers
	queue   chan *appendReq
	kick    chan struct{} // wakes the feed: an append saw another epoch

	// closing is held shared by Append while it enqueues, so that Close
	// can wait for every enqueued append to be answered.
	closing sync.RWMutex
	closed  bool
	// shut is set once the feed has stopped: Read and Lookup work until
	// then, since the feed may call them.
	shut atomic.Bool

	listened atomic.Bool
	epoch    atomic.Uint64 // the feed's epoch, for Read and Lookup errors
	down     atomic.Pointer[error]
}

var (
	_ hub.Engine  = (*Engine)(nil)
	_ hub.Closer  = (*Engine)(nil)
	_ hub.Health  = (*Engine)(nil)
	_ hub.Stats   = (*Engine)(nil)
	_ hub.Cluster = (*Engine)(nil)
)

type keys struct {
	meta, log, ids, dups string
	// plog lists the Seqs of the presence updates retained; dropped holds
	// the watermarks of retention (scripts.go).
	plog, dropped string
	// The shared state of hub.Cluster (cluster.go); lease, presence and
	// claim are prefixes, completed by a node's name.
	nodes, revoked, kicked, lease, presence, claim string
	parked                                         string // prefix, completed by a key's hash
}

func newKeys(prefix string) keys {
	p := "{" + prefix + "}:"
	return keys{
		meta: p + "meta", log: p + "log", ids: p + "ids", dups: p + "dups",
		plog: p + "log:presence", dropped: p + "log:dropped",
		nodes: p + "nodes", revoked: p + "revoked", kicked: p + "kicked", lease: p + "lease:", presence: p + "presence:", claim: p + "claim:",
		parked: p + "parked:",
	}
}

// trimmed returns the keys of the scripts that append or trim, in their
// order (scripts.go).
func (k keys) trimmed() []string {
	return []string{k.meta, k.log, k.ids, k.dups, k.plog, k.dropped}
}

// Open connects to the Redis named by rawURL (see ParseURL) and returns an
// engine on the log under opts.Prefix. It checks that Redis answers; the
// log itself is found or created by Listen.
func Open(ctx context.Context, rawURL string, opts Options) (*Engine, error) {
	c, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return open(ctx, c, opts)
}

func open(ctx context.Context, c *Conn, opts Options) (*Engine, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("redis: key prefix %q must not contain braces", opts.Prefix)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Wait < 0 {
		return nil, fmt.Errorf("redis: negative replica count %d", opts.Wait)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.MaxPresence <= 0 {
		opts.MaxPresence = DefaultMaxPresence
	}
	// An append whose answer was lost looks for its update after its
	// deadline; retention must not have dropped it by then.
	opts.Grace = max(opts.Grace, opts.Timeout+clockSkew+resolveTimeout+100*time.Millisecond)
	opts.WaitTimeout = max(opts.WaitTimeout, time.Millisecond) // WAIT n 0 waits for ever
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		topology: c.Topology,
		keys:     newKeys(opts.Prefix),
		maxCount: opts.Retention.MaxCount,
		maxAge:   opts.Retention.MaxAge,
		keepPres: opts.Retention.MaxPresence,
		wait:     opts.Wait,
		waitTime: opts.WaitTimeout,
		maxBatch: opts.MaxBatch,
		grace:    opts.Grace.Milliseconds(),
		timeout:  opts.Timeout,
		maxPres:  opts.MaxPresence,
		now:      opts.Now,
		log:      opts.Logger,
		queue:    make(chan *appendReq, opts.Workers*opts.MaxBatch),
		kick:     make(chan struct{}, 1),
	}
	if e.maxCount <= 0 && e.maxAge <= 0 {
		e.maxCount = DefaultMaxCount
	}
	if e.keepPres <= 0 {
		e.keepPres = hub.DefaultMaxPresence
	}
	waitRoom := time.Duration(0) // a read waits longer only for WAIT
	if opts.Wait > 0 {
		waitRoom = opts.WaitTimeout
	}
	e.rdb = c.client(opts.Timeout, waitRoom, opts.Workers+2)
	e.waiter = c.client(opts.Timeout, feedBlock, 1)
	e.m = newMetrics()
	e.breaker = newBreaker(e)
	if err := e.checkServer(ctx); err != nil {
		_ = e.rdb.Close()
		_ = e.waiter.Close()
		return nil, fmt.Errorf("redis: connect to %s: %w", c.Topology, err)
	}
	if opts.Registerer != nil {
		if err := e.m.register(opts.Registerer, e); err != nil {
			_ = e.rdb.Close()
			_ = e.waiter.Close()
			return nil, err
		}
	}
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.workers.Add(opts.Workers)
	for range opts.Workers {
		go e.appendLoop()
	}
	return e, nil
}

// checkServer checks that the node holding the log answers and is Redis
// 6.2 or later: the scripts read with exclusive ranges and trim by
// MINID, which older versions refuse half-way through a script.
func (e *Engine) checkServer(ctx context.Context) error {
	c, err := e.master(ctx)
	if err != nil {
		return err
	}
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	for line := range strings.Lines(info) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:")
		if !ok {
			continue
		}
		var major, minor int
		if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
			return fmt.Errorf("unreadable redis_version %q", v)
		}
		if major < 6 || major == 6 && minor < 2 {
			return fmt.Errorf("redis %s is too old: herald needs 6.2 or later", v)
		}
		return nil
	}
	return nil // a server that does not say (a proxy): the scripts will tell
}

// Topology says what the engine is connected to, for the log: the kind of
// deployment (standalone, sentinel, cluster) and its addresses.
func (e *Engine) Topology() string { return e.topology }

// Listen implements hub.Engine.
func (e *Engine) Listen(feed func(hub.Batch)) (hub.Position, error) {
	if !e.listened.CompareAndSwap(false, true) {
		return hub.Position{}, errors.New("redis: Listen called twice")
	}
	e.closing.RLock()
	defer e.closing.RUnlock()
	if e.closed {
		return hub.Position{}, hub.ErrClosed
	}
	ls, err := e.init(e.ctx)
	if err != nil {
		return hub.Position{}, err
	}
	e.epoch.Store(ls.epoch)
	e.wg.Add(2)
	go e.feedLoop(feed, feedState{epoch: ls.epoch, seq: ls.head, nonce: ls.nonce})
	go e.trimLoop()
	return hub.Position{Epoch: ls.epoch, Seq: ls.head}, nil
}

// feedState is where the feed stands: the last update it fed and that
// update's nonce, by which it recognizes its log, and the Seqs and nonces
// of the last ones it fed, by which it finds where a log that went back
// parts from what it fed.
type feedState struct {
	epoch  uint64
	seq    uint64
	nonce  string
	recent [recentFed]mark // a ring, by Seq
}

// recentFed is how many of the last updates fed the feed remembers.
const recentFed = 64

// mark is an entry's Seq and nonce.
type mark struct {
	seq   uint64
	nonce string
}

func (st *feedState) remember(m mark) { st.recent[m.seq%recentFed] = m }

// recentArgs lists the remembered marks, newest first, as script
// arguments.
func (st *feedState) recentArgs() []any {
	var args []any
	for i := range uint64(recentFed) {
		if st.seq < i {
			break
		}
		m := st.recent[(st.seq-i)%recentFed]
		if m.seq != st.seq-i || m.nonce == "" {
			continue
		}
		args = append(args, strconv.FormatUint(m.seq, 10), m.nonce)
	}
	return args
}

// logState is what luaInit says of the log.
type logState struct {
	epoch       uint64
	head        uint64
	nonce       string // of the head
	origin      uint64 // where the log's feed starts
	originNonce string
}

// init finds the log's epoch, head and origin, creating an epoch for a
// Redis that has none.
func (e *Engine) init(ctx context.Context) (logState, error) {
	res, err := e.run(ctx, "init", luaInit, []string{e.keys.meta, e.keys.log, e.keys.plog, e.keys.dropped}, strconv.FormatUint(hub.NewEpoch(), 10))
	if err != nil {
		return logState{}, fmt.Errorf("redis: open the log: %w", err)
	}
	v, ok := res.([]any)
	if !ok || len(v) != 5 {
		return logState{}, fmt.Errorf("redis: unexpected reply %v", res)
	}
	epoch, err1 := parseEpoch(v[0])
	head, err2 := parseUint(v[1])
	origin, err3 := parseUint(v[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		return logState{}, err
	}
	nonce, _ := v[2].(string)
	onon, _ := v[4].(string)
	return logState{epoch: epoch, head: head, nonce: nonce, origin: origin, originNonce: onon}, nil
}

// Lookup implements hub.Engine.
func (e *Engine) Lookup(ctx context.Context, id string) (hub.Position, bool, error) {
	if e.isClosed() {
		return hub.Position{}, false, hub.ErrClosed
	}
	res, err := e.run(ctx, "lookup", luaLookup, []string{e.keys.meta, e.keys.ids}, id)
	if err != nil {
		return hub.Position{}, false, fmt.Errorf("redis: lookup: %w", err)
	}
	v, ok := res.([]any)
	if !ok || len(v) != 3 {
		return hub.Position{}, false, fmt.Errorf("redis: unexpected reply %v", res)
	}
	epoch, err1 := parseEpoch(v[0])
	head, err2 := parseUint(v[1])
	if err := errors.Join(err1, err2); err != nil {
		return hub.Position{}, false, err
	}
	if s, ok := v[2].(string); ok {
		seq, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return hub.Position{}, false, fmt.Errorf("redis: corrupt index entry %q", s)
		}
		return hub.Position{Epoch: epoch, Seq: seq}, true, nil
	}
	return hub.Position{Epoch: epoch, Seq: head}, false, nil
}

// Read implements hub.Engine.
//
// Gap and PresenceGap come from the watermarks of retention, read with
// the entries: an update of either kind after the position is missing
// exactly when the highest Seq dropped of its kind is past the position.
// A page of entries none of which can be decoded is read past, up to a few
// pages, so that a reader is not sent beyond good entries that follow it;
// entries that cannot be decoded are a Gap.
func (e *Engine) Read(ctx context.Context, after hub.Position, limit int) (hub.Range, error) {
	if limit <= 0 {
		return hub.Range{}, errors.New("redis: read limit must be positive")
	}
	from := after
	for pages := 1; ; pages++ {
		r, es, w, err := e.readPage(ctx, from, limit)
		if err != nil {
			return hub.Range{}, err
		}
		if len(r.Updates) > 0 || es.n < limit || pages == 8 {
			if from != after {
				r.Gap = true // the undecodable entries read past
			}
			r.PresenceGap = after.Seq < w.presence
			return r, nil
		}
		from.Seq = es.last
	}
}

// watermarks are the highest Seqs retention dropped, of updates that are
// not presence ones and of presence updates.
type watermarks struct {
	other, presence uint64
}

// readPage is one luaRead.
func (e *Engine) readPage(ctx context.Context, after hub.Position, limit int) (hub.Range, entries, watermarks, error) {
	if e.isClosed() {
		return hub.Range{}, entries{}, watermarks{}, hub.ErrClosed
	}
	res, err := e.run(ctx, "read", luaRead, []string{e.keys.meta, e.keys.log, e.keys.dropped},
		strconv.FormatUint(after.Epoch, 10), strconv.FormatUint(after.Seq, 10), strconv.Itoa(limit))
	if err != nil {
		return hub.Range{}, entries{}, watermarks{}, fmt.Errorf("redis: read: %w", err)
	}
	v, ok := res.([]any)
	if !ok || len(v) != 5 {
		return hub.Range{}, entries{}, watermarks{}, fmt.Errorf("redis: unexpected reply %v", res)
	}
	epoch, err1 := parseEpoch(v[0])
	head, err2 := parseUint(v[1])
	other, err3 := parseUint(v[3])
	pres, err4 := parseUint(v[4])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return hub.Range{}, entries{}, watermarks{}, err
	}
	if epoch != after.Epoch {
		return hub.Range{}, entries{}, watermarks{}, hub.ErrEpoch
	}
	es, err := decodeEntries(v[2])
	if err != nil {
		return hub.Range{}, entries{}, watermarks{}, err
	}
	us := es.updates
	r := hub.Range{Updates: us, Head: head, PresenceGap: after.Seq < pres}
	// Entries that cannot be decoded before the first that can are a gap
	// too; the feed meets the others as skips, and a read from there
	// reports them.
	r.Gap = after.Seq < other || es.n > 0 && (len(us) == 0 || es.first < us[0].Seq)
	return r, es, watermarks{other: other, presence: pres}, nil
}

// Healthy implements hub.Health: the circuit breaker is not open, and
// Redis answered the last round trip of the feed or of an append.
func (e *Engine) Healthy() error {
	if e.breaker.State() == gobreaker.StateOpen {
		return ErrUnavailable
	}
	if p := e.down.Load(); p != nil {
		return *p
	}
	return nil
}

// Close implements hub.Closer: it answers the appends in flight, stops the
// feed and closes the connections.
func (e *Engine) Close() error {
	e.closing.Lock()
	if e.closed {
		e.closing.Unlock()
		return nil
	}
	e.closed = true
	e.closing.Unlock()
	close(e.queue) // no Append enqueues once closed is set under the lock
	e.workers.Wait()
	e.cancel()
	// Closing the waiter fails the feed's blocking read at once.
	err := e.waiter.Close()
	e.wg.Wait()
	e.shut.Store(true)
	e.m.unregister()
	return errors.Join(err, e.rdb.Close())
}

func (e *Engine) isClosed() bool { return e.shut.Load() }

// run runs a script and times the round trip.
func (e *Engine) run(ctx context.Context, op string, s *goredis.Script, keys []string, args ...any) (any, error) {
	start := time.Now()
	res, err := s.Run(ctx, e.rdb, keys, args...).Result()
	e.m.roundTrip(op, time.Since(start))
	if err != nil && e.shut.Load() {
		return nil, hub.ErrClosed // cut off by Close
	}
	return res, err
}

// setDown records whether Redis answers, for Healthy and the log.
func (e *Engine) setDown(err error) {
	if err == nil {
		if e.down.Swap(nil) != nil {
			e.m.reconnects.Inc()
			e.log.Info("redis reachable again")
		}
		return
	}
	if e.down.Swap(&err) == nil {
		e.log.Warn("redis unreachable; retrying", "err", err)
	}
}

func parseEpoch(v any) (uint64, error) {
	s, _ := v.(string)
	if s == "" {
		return 0, nil // no log
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis: corrupt epoch %q", s)
	}
	return n, nil
}

func parseUint(v any) (uint64, error) {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return 0, fmt.Errorf("redis: negative Seq %d", x)
		}
		return uint64(x), nil
	case string:
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("redis: corrupt Seq %q", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("redis: unexpected Seq %v", v)
}

// entries is a run of log entries as read from Redis.
type entries struct {
	updates []*hub.Update
	// first and prev are the Seq of the first entry and the nonce before
	// it; last and nonce those of the last entry.
	first, last uint64
	prev, nonce string
	n           int      // entries read, decodable or not
	marks       []mark   // of every entry read
	bad         []uint64 // Seqs of the entries that cannot be decoded
}

// decodeEntries decodes XRANGE or XREAD entries written by luaAppend. An
// entry whose record cannot be decoded is left out, which readers see as
// a gap.
func decodeEntries(v any) (entries, error) {
	var r entries
	es, _ := v.([]any)
	if len(es) == 0 {
		return r, nil
	}
	r.n = len(es)
	r.updates = make([]*hub.Update, 0, len(es))
	for i, x := range es {
		e, ok := x.([]any)
		if !ok || len(e) != 2 {
			return entries{}, fmt.Errorf("redis: unexpected entry %v", x)
		}
		id, _ := e[0].(string)
		seq, err := strconv.ParseUint(strings.TrimSuffix(id, "-0"), 10, 64)
		if err != nil {
			return entries{}, fmt.Errorf("redis: unexpected entry id %q", id)
		}
		r.last, r.nonce = seq, ""
		f, _ := e[1].([]any)
		if i == 0 {
			r.first, r.prev = seq, ""
			if len(f) >= 12 {
				r.prev, _ = f[11].(string)
			}
		}
		if len(f) < 8 {
			r.bad = append(r.bad, seq)
			continue
		}
		r.nonce, _ = f[5].(string)
		r.marks = append(r.marks, mark{seq, r.nonce})
		d, _ := f[7].(string)
		u := &hub.Update{}
		// UnmarshalBinary copies what it keeps and writes nothing, so it
		// may read the string's bytes in place.
		if u.UnmarshalBinary(unsafe.Slice(unsafe.StringData(d), len(d))) != nil {
			r.bad = append(r.bad, seq)
			continue
		}
		u.Seq = seq
		r.updates = append(r.updates, u)
	}
	return r, nil
}
