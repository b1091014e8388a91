package hub

import (
	"context"
	"errors"
	"time"
)

// Engine is a durable, ordered log of updates plus a live feed of what is
// appended to it. The hub owns one engine; the engine never calls into the
// hub but through the feed function given to Listen.
//
// Every engine must pass engine/enginetest, which is the executable form of
// the contract written on each method below.
type Engine interface {
	// Listen registers the live feed. After it returns, the engine calls
	// feed for every update appended to the log (by this node or, for
	// engines shared between nodes, by any node), exactly once, in Seq
	// order, and only once the update is durable and visible to Read and
	// Lookup. Calls to feed never overlap. feed may keep the *Update but not
	// the slice. A slow feed slows appends down; it never loses updates.
	// Listen is called at most once, before the first Append.
	Listen(feed func([]*Update))

	// Append makes u durable and assigns u.Seq, the next position in the
	// log. It returns nil only once u would survive a crash of the process
	// (and, for durable engines, of the machine). Append is safe for
	// concurrent use; concurrent calls are ordered by the engine, which may
	// commit them together (group commit). On error nothing of u is stored
	// and u.Seq is left zero. The engine must not modify u after Append
	// returns, and the caller must not modify u after calling Append.
	Append(ctx context.Context, u *Update) error

	// Lookup returns the position of the earliest retained update whose ID
	// is id. It is an index lookup, never a scan of the history. found is
	// false when no retained update has that id (never published, or
	// dropped by retention).
	Lookup(ctx context.Context, id string) (seq uint64, found bool, err error)

	// Read returns, in order, up to limit (which must be positive) retained
	// updates whose Seq is greater than after. An empty result means the caller has read
	// everything appended so far. Updates dropped by retention are skipped
	// silently: callers compare Seq to detect a gap. Read is safe for
	// concurrent use with Append and never blocks appends for long.
	Read(ctx context.Context, after uint64, limit int) ([]*Update, error)
}

// Closer is implemented by engines that hold resources. Close ends the live
// feed, waits for in-flight appends and releases files or connections. After
// Close, Append, Read and Lookup return ErrClosed. Close is safe to call more
// than once.
type Closer interface {
	Close() error
}

// Stats is implemented by engines that can tell how much history they hold.
type Stats interface {
	// HistoryLen returns the number of retained updates.
	HistoryLen() int
}

// ErrClosed is returned by engines after Close.
var ErrClosed = errors.New("hub: engine closed")

// Retention bounds an engine's history. Zero values mean no bound of that
// kind; engines apply their own defaults when both are zero. Retention drops
// updates from the oldest end only: an update with an old Time behind a
// newer one stays until the newer one goes.
type Retention struct {
	// MaxCount is the number of most recent updates kept.
	MaxCount int
	// MaxAge drops updates older than this.
	MaxAge time.Duration
}
