package hub

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"
)

// Position is a place in an engine's log: the Seq of an update, in the log
// named by Epoch.
//
// An epoch names one log from its first append on. It changes only when
// the log is replaced by another one that is not its continuation: a
// shared store that restarted without its data, failed over to a stale
// replica or was flushed. Seqs are comparable only within one epoch, so a
// hub that meets a new epoch knows that its positions mean nothing any
// more, instead of mistaking a renumbered log for the old one.
type Position struct {
	Epoch uint64
	Seq   uint64
}

// NewEpoch draws a random, non-zero epoch for a new log.
func NewEpoch() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// Batch is what an engine's live feed hands over: every update appended to
// the log of Epoch after the Seq After, in Seq order.
//
// After makes a skip explicit: a feed that could not deliver some updates
// (a node cut off from a shared log for a while) sends a batch whose After
// is past the last Seq it fed, and the hub reads the ones in between. A
// batch that opens a new epoch says in After where the new log's feed
// starts; its Updates may be empty.
//
// The one hole a batch may have is of presence updates that retention
// dropped from the middle of the log before the feed read them: a jump in
// Seqs within a batch, or from After to its first update. The hub takes
// it for a loss of presence updates (see Range.PresenceGap).
type Batch struct {
	Epoch   uint64
	After   uint64
	Updates []*Update

	at int64 // unix nanos the hub's inbox took it, for the dispatch lag
}

// Range is the result of Engine.Read.
type Range struct {
	// Updates are retained updates after the position read from, in Seq
	// order with no retained update left out between them.
	Updates []*Update
	// Gap is true when updates after the position read from are no
	// longer retained: between it and Updates[0], or, when Updates is
	// empty, between it and Head. Retention drops the oldest updates
	// first, so a reader that meets a gap has lost what it covers.
	//
	// Presence updates dropped under Retention.MaxPresence leave no Gap:
	// they are dropped from the middle of the log, and only readers that
	// want them care (PresenceGap).
	Gap bool
	// PresenceGap is true when Presence updates after the position read
	// from are no longer retained, whichever retention dropped them. A
	// reader that never wants presence updates ignores it.
	PresenceGap bool
	// Head is the Seq of the last update appended as of the read (zero
	// for an empty log). A reader at Head has read everything.
	Head uint64
}

// Engine is a durable, ordered log of updates plus a live feed of what is
// appended to it. The hub owns one engine; the engine never calls into the
// hub but through the feed function given to Listen.
//
// Every engine must pass engine/enginetest, which is the executable form of
// the contract written on each method below.
type Engine interface {
	// Listen registers the live feed and returns the head of the log: the
	// position of the last update appended so far (Seq zero when none).
	// After it returns, the engine calls feed for every update appended
	// after the head (by this node or, for engines shared between nodes,
	// by any node), in Seq order, and only once the update is durable and
	// visible to Read and Lookup. Calls to feed never overlap, and feed
	// must not block: it hands the batch over and returns. feed may keep
	// the *Update but not the slice.
	//
	// The feed may skip updates, saying so in Batch.After (see Batch). A
	// batch whose Epoch differs from the previous one reports a lost log:
	// nothing before it can be read any more, and Seqs may start again.
	// Listen is called at most once, before the first Append.
	Listen(feed func(Batch)) (Position, error)

	// Append makes u durable and assigns u.Seq, the next position in the
	// log. It returns nil only once u would survive a crash of the process
	// (and, for durable engines, of the machine). Append is safe for
	// concurrent use; concurrent calls are ordered by the engine, which may
	// commit them together (group commit). On error nothing of u is
	// stored, now or after the engine is reopened, and u.Seq is left
	// zero. The engine must not modify u after Append returns, and the
	// caller must not modify u after calling Append.
	//
	// Append may return before or after the feed hands u over: an engine
	// shared between nodes feeds what it reads back from the shared log,
	// like any other node's updates.
	Append(ctx context.Context, u *Update) error

	// Lookup returns the position of the earliest retained update whose ID
	// is id. It is an index lookup, never a scan of the history. found is
	// false when no retained update has that id (never published, or
	// dropped by retention); pos is then the head of the log as of the
	// lookup, past any update with that id that retention dropped, so a
	// caller can start after it without repeating what the client had.
	Lookup(ctx context.Context, id string) (pos Position, found bool, err error)

	// Read returns, in order, up to limit (which must be positive)
	// retained updates whose Seq is greater than after.Seq, and says
	// whether retention dropped some of them (Range.Gap). It fails with
	// ErrEpoch when after.Epoch is not the epoch of the log. Read is safe
	// for concurrent use with Append and never blocks appends for long.
	Read(ctx context.Context, after Position, limit int) (Range, error)
}

// Closer is implemented by engines that hold resources. Close ends the live
// feed, waits for in-flight appends and releases files or connections. After
// Close, Append, Read and Lookup return ErrClosed. Close is safe to call more
// than once.
type Closer interface {
	Close() error
}

// Health is implemented by engines that can tell whether they take
// appends now. Healthy returns nil when they do, else why not (a history
// stopped after a write failure, a shared store out of reach); the hub
// reports it as not ready, so that a load balancer sends publishers
// elsewhere. It must be cheap: readiness probes call it.
type Health interface {
	Healthy() error
}

// Stats is implemented by engines that can tell how much history they hold.
type Stats interface {
	// HistoryLen returns the number of retained updates.
	HistoryLen() int
}

// Errors engines return.
var (
	// ErrClosed is returned by engines after Close.
	ErrClosed = errors.New("hub: engine closed")
	// ErrEpoch is returned by Read for a position in a log that has been
	// replaced (see Position).
	ErrEpoch = errors.New("hub: the history was replaced (epoch changed)")
)

// Retention bounds an engine's history. Zero values mean no bound of that
// kind; engines apply their own defaults when both MaxCount and MaxAge are
// zero. Retention drops updates from the oldest end only: an update with
// an old Time behind a newer one stays until the newer one goes. An engine
// may keep an update a little longer than its retention says, never
// shorter: an engine shared between nodes keeps each update until every
// node's feed has had a moment to read it, so that a small history does not
// turn a burst of publishes into skips.
//
// Presence updates (Update.Presence) are counted apart, so that no number
// of them pushes another update out of the history: MaxCount counts the
// others, and MaxPresence keeps the most recent presence updates, dropping
// older ones from the middle of the log. A presence update never outlives
// an older update of the other kind: when retention drops an update, it
// drops every presence update before it too, so that the log keeps a
// single oldest end.
type Retention struct {
	// MaxCount is the number of most recent updates kept, presence
	// updates not counted.
	MaxCount int
	// MaxAge drops updates older than this, of both kinds.
	MaxAge time.Duration
	// MaxPresence is the number of most recent presence updates kept;
	// zero means DefaultMaxPresence.
	MaxPresence int
}

// DefaultMaxPresence is the number of presence updates an engine keeps when
// Retention.MaxPresence is zero.
const DefaultMaxPresence = 10_000
