// Package bolt is herald's embedded durable history, the default engine: a
// write-ahead journal in front of one file on local disk, on
// go.etcd.io/bbolt.
//
// Why bbolt rather than pebble: bbolt is pure Go, keeps the history in one
// file, and is a B+tree, so resuming from an id is one cursor Seek in an
// index bucket and reading from a position is one Seek in the log. Pebble's
// LSM brings compactions, many files and a much larger dependency for write
// rates far beyond what one hub publishes.
//
// Why a journal in front of it: a bbolt commit writes every page it dirtied
// and syncs twice (pages, then the meta page), and costs about 1 ms of CPU
// on the machine below, while publishers wait for it. So an append goes to
// the journal first: one writer goroutine turns all pending appends into
// one write and one fdatasync (group commit) and acknowledges them, and an
// applier goroutine moves them to the tree behind, thousands per
// transaction. Until then they are served from memory (the tail). A crash
// loses nothing acknowledged: Open replays into the tree what the journal
// holds beyond it. The journal is two files used in turn, overwritten in
// place once the tree holds what they carry, so its syncs never have file
// metadata to flush (journal.go).
//
// Measured on a 2-vCPU VM, ext4 on virtio (go test -run '^$' -bench
// 'Append$' -benchtime 20000x): durable appends per second with 1, 8 and 64
// concurrent publishers were 3,000, 12,200 and 76,600 with bbolt alone
// (group commit of bbolt transactions) and 6,800, 25,000-28,000 and
// 105,000-113,000 with the journal. Lookup among 1,000,000 records takes
// 2 µs, found or not; reading 100 records from a position, 35 µs. The
// hashmap freelist is kept in the file: the array freelist cost 5 times as
// much CPU per commit, and not syncing the freelist made Open scan the file
// (200 ms instead of 0.5 ms at 1,000,000 records).
//
// Layout: bucket "log" maps the 8-byte big-endian Seq to the record
// (hub.Update.MarshalBinary), and bucket "presence" does the same for
// presence records (hub.Update.Presence), so that each kind has a front
// of its own; bucket "ids" holds the keys id + 0x00 + Seq of both, with
// empty values, so the earliest retained occurrence of an id is the first
// key at or after id + 0x00; bucket "meta" keeps the last Seq in the tree
// (which the log cannot tell once retention has emptied it), the number of
// records there and of presence records among them, and the highest Seq
// retention has dropped of each kind. The journal files sit beside the
// tree file, with "-journal.0" and "-journal.1" added to its name.
//
// Retention applies to records as they reach the tree, at most
// defaultApplyDelay after they were appended, in the transaction that
// writes them, and looks only at what it drops: MaxPresence and MaxAge take
// presence records from the front of their bucket; MaxCount and MaxAge take
// records of the other kind from the front of the log, each with the
// presence records before it. So a churn of subscribers never pushes an
// application's update out, and since a presence record costs what another
// does, a put and a delete in two buckets, it costs about what as many
// publishes do: with 15 presence records in 16, the tree's work per record
// was 4.6 µs against 4.4 (medians of 11 runs of go test -bench 'Apply$' on
// the VM above, whose noise is larger than the difference), and publishes
// per second were the same (-bench 'Append(Presence)?$'). Presence records
// leave from between the others, so a jump in Seqs no longer says what is
// missing: Read merges the two buckets, and reports Gap and PresenceGap
// from the highest Seq dropped of each kind, which the meta bucket keeps.
// Files written before presence updates existed open as they are: their
// records are all of the other kind, and what is missing from them is what
// comes before their first record.
//
// Acknowledged means durable, and refused means absent, now and after any
// restart. A journal commit that fails (a short write, a full disk, a
// failed fdatasync) may have put some of its frames in the file anyway;
// before its appends are refused, what it may have written is overwritten
// with zeros and synced, and the next commit writes in its place. If that
// fails too, nothing is known of what the file holds (after a failed
// fsync, the page cache no longer says what reached the disk), so the
// engine fail-stops, as databases do: it writes the last acknowledged Seq
// to the tree, a file with its own syncs (key "fence" in bucket "meta"),
// so that the next Open replays nothing past it; it refuses every later
// Append with ErrFailed until a restart; and it keeps serving reads of
// what it acknowledged. The gauge herald_journal_stopped says so.
//
// The tail is bounded in bytes (Options.MaxTailBytes, 64 MiB by default):
// when the tree falls behind or cannot be written, appends wait for room,
// up to Options.TailWait and their context, then fail with ErrTailFull,
// rather than growing memory and the journal without end. The gauge
// herald_journal_tail_bytes shows how full it is.
package bolt

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/herald-hub/herald/hub"
)

const (
	// DefaultMaxCount is the number of updates kept when the retention
	// sets neither MaxCount nor MaxAge.
	DefaultMaxCount = 1_000_000
	// DefaultMaxBatch bounds how many appends share one transaction.
	DefaultMaxBatch = 1024
	// DefaultLockTimeout is how long Open waits for the file lock that
	// another process holds.
	DefaultLockTimeout = 2 * time.Second
	// DefaultWarm is how much of the file Open warms by default.
	DefaultWarm = 1 << 30
	// MaxIDLen is the longest id the engine stores: bbolt keys are at most
	// 32 KiB, and an index key is the id plus 9 bytes.
	MaxIDLen = bbolt.MaxKeySize - 9
	// DefaultMaxTailBytes bounds the tail when Options.MaxTailBytes is
	// zero. The applier takes the tail once it holds 4 MiB
	// (defaultApplyBytes) or is 50 ms old, so the tail only grows past
	// that while tree transactions are slow or failing: 64 MiB rides out
	// a stall of about a second at 100,000 appends per second of 600
	// bytes without slowing publishers. The memory it takes is about
	// twice its bytes (each entry keeps the update, frame included, and
	// its encoded record), and the journal file being written grows by
	// about as much while the other waits for the tree.
	DefaultMaxTailBytes = 64 << 20
	// DefaultTailWait bounds the wait for room in a full tail when
	// Options.TailWait is zero: well below the 30 s an HTTP client
	// commonly waits for a response (the Go client's header timeout), so
	// a publisher gets a refusal it can retry rather than a timeout that
	// leaves it guessing.
	DefaultTailWait = 5 * time.Second
)

// Options configures an Engine. The zero value is valid.
type Options struct {
	// Retention bounds the history: MaxCount and MaxAge both zero mean
	// DefaultMaxCount, MaxPresence zero means hub.DefaultMaxPresence.
	Retention hub.Retention
	// Logger receives errors the writer cannot return to a caller (a failed
	// trim when idle), as is: the caller names the group. Nil discards them.
	Logger *slog.Logger
	// MaxBatch bounds how many appends share one transaction and one
	// fsync; zero means DefaultMaxBatch.
	MaxBatch int
	// LockTimeout bounds the wait for the file lock; zero means
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// NoSync skips fsync: Append no longer survives a machine crash. For
	// tests only.
	NoSync bool
	// Now is the clock for retention by age; nil means time.Now.
	Now func() time.Time
	// Warm bounds how many bytes of an existing file Open reads into the
	// operating system's page cache, from a background goroutine, so that
	// the replays after a cold start (a reboot) do not wait for one disk
	// read per 4 KiB page: bbolt maps the file for random access, which
	// turns the kernel's readahead off. Zero means DefaultWarm; negative
	// turns warming off.
	Warm int64
	// MaxTailBytes bounds the tail: the journaled updates the engine
	// holds in memory until the applier has written them to the tree,
	// counted as encoded records. When the tail is full, appends wait for
	// the applier (up to TailWait and their context), so a tree that
	// falls behind or fails slows publishers down instead of growing
	// memory. The tail exceeds it by one update at most. Zero or less
	// means DefaultMaxTailBytes.
	MaxTailBytes int
	// TailWait bounds how long an append waits for room in a full tail
	// before it fails with ErrTailFull. Zero means DefaultTailWait;
	// negative fails such appends at once.
	TailWait time.Duration
	// Registerer receives the engine's metrics (herald_journal_*); nil
	// means none. Close unregisters them.
	Registerer prometheus.Registerer

	// tune adjusts bbolt's options; benchmarks use it to compare settings.
	tune func(*bbolt.Options)
	// test replaces the journal's and the applier's constants.
	test *testOptions
}

// testOptions: zero values keep the defaults.
type testOptions struct {
	maxApply   int
	segment    int64
	applyCount int
	applyBytes int
	applyDelay time.Duration
	// writeAt and syncData replace the journal's file operations.
	writeAt  func(f *os.File, b []byte, off int64) (int, error)
	syncData func(f *os.File) error
	// apply, when it returns an error, fails the applier's transaction
	// before it begins.
	apply func() error
}

var (
	bucketLog      = []byte("log")
	bucketIDs      = []byte("ids")
	bucketPresence = []byte("presence")
	bucketMeta     = []byte("meta")
	keyLast        = []byte("last")
	keyCount       = []byte("count")
	keyEpoch       = []byte("epoch")
	// Keys of treeState beside keyCount.
	keyPresence        = []byte("presence")
	keyDropped         = []byte("dropped")
	keyDroppedPresence = []byte("dropped-presence")
	empty              = []byte{}
)

// Engine is a durable hub.Engine: a journal in front of one bbolt file.
type Engine struct {
	db          *bbolt.DB
	j           *journal
	epoch       uint64 // names this file's log; kept in the meta bucket
	logger      *slog.Logger
	maxCount    int
	maxPresence int
	maxAge      time.Duration
	maxBatch    int
	now         func() time.Time

	// When the applier writes the tail to the tree.
	applyCount int
	applyBytes int
	applyDelay time.Duration
	maxApply   int
	// applyHook is testOptions.apply.
	applyHook func() error

	// The bound on the tail.
	maxTail  int
	tailWait time.Duration
	// room: the applier tells the writer that the tail shrank; capacity 1.
	room chan struct{}
	// full is closed by the writer when it starts waiting for room in the
	// tail, and replaced by an open one once there is room: an Append that
	// waits to hand its request over starts counting TailWait then.
	full atomic.Pointer[chan struct{}]
	// stopped holds the error that stopped the engine (failstop.go), nil
	// while it takes appends.
	stopped atomic.Pointer[error]
	// commitFailures counts journal commits that failed.
	commitFailures atomic.Int64

	// Metrics on Options.Registerer, taken off at Close.
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	feed    atomic.Pointer[func([]*hub.Update)]
	reqs    chan *request // unbuffered: a request is taken or not, never queued
	quit    chan struct{} // closed by Close
	ended   chan struct{} // closed by the writer when it returns
	applied chan struct{} // closed by the applier when it returns
	poke    chan struct{} // the writer wakes the applier; capacity 1
	// warmed is closed when the warming goroutine returns; warmedBytes
	// counts what it read.
	warmed      chan struct{}
	warmedBytes atomic.Int64
	count       atomic.Int64 // retained records, for HistoryLen
	closed      atomic.Bool
	// treeLast is the last Seq the tree holds: the applier sets it, the
	// writer reads it to know when a journal file may be overwritten.
	treeLast atomic.Uint64
	// urgent is set by the writer while its journal file is full and the
	// other one still holds records the tree does not.
	urgent atomic.Bool
	// coming counts Append calls about to hand their request over.
	coming atomic.Int64
	// commits counts journal commits; benchmarks report the batch size.
	commits atomic.Int64
	// applies counts tree transactions that carried appends.
	applies atomic.Int64

	closeOnce sync.Once
	closeErr  error

	// mu guards the tail: the records in the journal but not yet in the
	// tree.
	mu   sync.RWMutex
	tail tail

	// Owned by the writer goroutine.
	last uint64 // Seq of the last journaled update

	// Owned by the applier goroutine.
	st treeState // as the tree's last commit left it
	// The Time of the first record of the log, and of the first presence
	// record, once trim has read them: a record's Time never changes, so
	// an idle trim need not decode the same record again.
	head, presenceHead front
}

// treeState is what the meta bucket keeps of the tree beside its last Seq:
// the counts retention needs, and what it has dropped, for Read to report
// gaps. Retention drops presence records from between the others, so a
// jump in Seqs no longer tells whether an update of the other kind is
// missing.
type treeState struct {
	n        int64 // records
	presence int64 // presence records among them
	// dropped is the highest Seq of a dropped record that is not a
	// presence one: every record up to it is dropped too. droppedPresence
	// is the highest Seq of a dropped presence record.
	dropped, droppedPresence uint64
}

// front is a record at the front of the log or of the presence bucket, as
// trim last read it.
type front struct {
	seq  uint64 // 0 if unknown
	time time.Time
}

var (
	_ hub.Engine = (*Engine)(nil)
	_ hub.Closer = (*Engine)(nil)
	_ hub.Stats  = (*Engine)(nil)
	_ hub.Health = (*Engine)(nil)
)

type request struct {
	u    *hub.Update
	rec  []byte
	done chan error
}

// Open opens or creates the history file at path and its journal, replays
// into the file what the journal holds beyond it, and starts the writer and
// the applier. It fails after Options.LockTimeout when another process
// holds the file.
func Open(path string, opts Options) (*Engine, error) {
	e := &Engine{
		logger:   opts.Logger,
		maxCount: opts.Retention.MaxCount,
		// MaxPresence has no "none" value: presence updates come and go
		// with subscribers, however many the hub sees.
		maxPresence: opts.Retention.MaxPresence,
		maxAge:      opts.Retention.MaxAge,
		maxBatch:    opts.MaxBatch,
		now:         opts.Now,
		applyCount:  defaultApplyCount,
		applyBytes:  defaultApplyBytes,
		applyDelay:  defaultApplyDelay,
		maxApply:    maxApply,
		reqs:        make(chan *request),
		quit:        make(chan struct{}),
		ended:       make(chan struct{}),
		applied:     make(chan struct{}),
		poke:        make(chan struct{}, 1),
		warmed:      make(chan struct{}),
		maxTail:     cmp.Or(max(opts.MaxTailBytes, 0), DefaultMaxTailBytes),
		tailWait:    cmp.Or(opts.TailWait, DefaultTailWait),
		room:        make(chan struct{}, 1),
	}
	full := make(chan struct{})
	e.full.Store(&full)
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	if e.maxCount <= 0 && e.maxAge <= 0 {
		e.maxCount = DefaultMaxCount
	}
	if e.maxPresence <= 0 {
		e.maxPresence = hub.DefaultMaxPresence
	}
	if e.maxBatch <= 0 {
		e.maxBatch = DefaultMaxBatch
	}
	if e.now == nil {
		e.now = time.Now
	}
	segment := int64(journalSegment)
	if opts.test != nil {
		segment = cmp.Or(opts.test.segment, segment)
		e.applyCount = cmp.Or(opts.test.applyCount, e.applyCount)
		e.applyBytes = cmp.Or(opts.test.applyBytes, e.applyBytes)
		e.applyDelay = cmp.Or(opts.test.applyDelay, e.applyDelay)
		e.maxApply = cmp.Or(opts.test.maxApply, maxApply)
		e.applyHook = opts.test.apply
	}
	bo := &bbolt.Options{
		Timeout: opts.LockTimeout,
		NoSync:  opts.NoSync,
		// The hashmap freelist stays fast as the file fragments, which a
		// log that is trimmed at the front and grown at the back does.
		FreelistType: bbolt.FreelistMapType,
	}
	if bo.Timeout <= 0 {
		bo.Timeout = DefaultLockTimeout
	}
	if opts.tune != nil {
		opts.tune(bo)
	}
	db, err := bbolt.Open(path, 0o600, bo)
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open history %s: locked by another process for %v (is another herald using it?)", path, bo.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	e.db = db
	if err := db.Update(e.load); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	// The journal is opened under the tree's file lock.
	j, found, err := openJournal(path, segment, opts.NoSync)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	e.j = j
	if t := opts.test; t != nil && t.writeAt != nil {
		j.writeAt = t.writeAt
	}
	if t := opts.test; t != nil && t.syncData != nil {
		j.syncData = t.syncData
	}
	if err := e.replay(found); err != nil {
		_ = j.close()
		_ = db.Close()
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	if opts.Registerer != nil {
		if err := e.register(opts.Registerer); err != nil {
			_ = j.close()
			_ = db.Close()
			return nil, fmt.Errorf("open history %s: %w", path, err)
		}
	}
	e.count.Store(e.st.n)
	go e.run()
	go e.applier()
	warm := opts.Warm
	if warm == 0 {
		warm = DefaultWarm
	}
	go e.warm(path, warm) // ends by itself, or at Close
	return e, nil
}

// replay writes into the tree the journal's records that it does not hold
// yet, then starts a new round of the first journal file: everything in
// both files is in the tree then.
func (e *Engine) replay(found [2][]frame) error {
	fence, hasFence, err := e.readFence()
	if err != nil {
		return fmt.Errorf("read journal fence: %w", err)
	}
	if hasFence {
		// The last run stopped after a commit it could not erase: what
		// lies past the fence was refused.
		found = fenced(found, fence)
	}
	frames, gap := recoverFrames(found, e.last)
	if gap != nil {
		// Frames never go missing between two that made it to disk; a
		// gap means the files were damaged or mixed up. Keep what is in
		// order, say what is not.
		e.logger.Error("replay journal", "err", gap)
	}
	for len(frames) > 0 {
		chunk := frames[:min(len(frames), e.maxApply)]
		frames = frames[len(chunk):]
		batch := make([]entry, 0, len(chunk))
		for _, f := range chunk {
			id, _, err := hub.RecordHead(f.rec)
			if err != nil {
				return fmt.Errorf("journal record %d: %w", f.seq, err)
			}
			u := &hub.Update{ID: string(id), Seq: f.seq, Presence: hub.RecordPresence(f.rec)}
			batch = append(batch, entry{u: u, rec: f.rec})
		}
		if _, err := e.applyBatch(batch); err != nil {
			return fmt.Errorf("replay journal: %w", err)
		}
	}
	e.last = e.treeLast.Load()
	// Everything readable in the journal is in the tree now, or lost past
	// a gap: make sure none of it is read again. File 0 starts a new round
	// (a new salt); file 1's round ends here.
	if err := e.j.invalidate(1); err != nil {
		return fmt.Errorf("reset journal: %w", err)
	}
	if hasFence {
		// File 0's round may hold refused frames too (file 1's was
		// ended above): only once it can never be read again may the
		// fence go.
		if err := e.j.invalidate(0); err != nil {
			return fmt.Errorf("reset journal: %w", err)
		}
		if err := e.clearFence(); err != nil {
			return fmt.Errorf("reset journal: %w", err)
		}
	}
	return e.j.restart(0)
}

// warmChunk is what warm reads at once: large enough for the disk to
// stream, small enough that a lookup's read never queues long behind it.
const warmChunk = 1 << 20

// warm reads up to limit bytes of the file at path, front to back, one
// chunk at a time, so that its pages are in the page cache when replays
// need them. It stops at Close.
func (e *Engine) warm(path string, limit int64) {
	defer close(e.warmed)
	if limit < 0 {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, warmChunk)
	for off := int64(0); off < limit; {
		select {
		case <-e.quit:
			return
		default:
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), limit-off)], off)
		off += int64(n)
		e.warmedBytes.Store(off)
		if err != nil { // io.EOF at the end of the file
			return
		}
	}
}

// load creates the buckets and restores the last Seq and the tree's state.
func (e *Engine) load(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bucketLog, bucketIDs, bucketPresence, bucketMeta} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyEpoch); len(v) == 8 {
		e.epoch = binary.BigEndian.Uint64(v)
	} else {
		// A new file, or one from before epochs: this log starts here.
		e.epoch = hub.NewEpoch()
		if err := meta.Put(keyEpoch, binary.BigEndian.AppendUint64(nil, e.epoch)); err != nil {
			return err
		}
	}
	if v := meta.Get(keyLast); len(v) == 8 {
		e.last = binary.BigEndian.Uint64(v)
	}
	for _, name := range [][]byte{bucketLog, bucketPresence} {
		if k, _ := tx.Bucket(name).Cursor().Last(); len(k) == 8 {
			e.last = max(e.last, binary.BigEndian.Uint64(k))
		}
	}
	e.treeLast.Store(e.last)
	if v := meta.Get(keyCount); len(v) == 8 {
		e.st.n = int64(binary.BigEndian.Uint64(v))
	} else {
		e.st.n = int64(tx.Bucket(bucketLog).Stats().KeyN)
	}
	if v := meta.Get(keyPresence); len(v) == 8 {
		e.st.presence = int64(binary.BigEndian.Uint64(v))
	} else {
		// A file from before presence updates has none.
		e.st.presence = int64(tx.Bucket(bucketPresence).Stats().KeyN)
	}
	e.st.droppedPresence = getUint64(meta, keyDroppedPresence)
	if v := meta.Get(keyDropped); len(v) == 8 {
		e.st.dropped = binary.BigEndian.Uint64(v)
		return nil
	}
	// A file from before presence updates: every record in it is of the
	// other kind, and retention dropped them from the front only, so what
	// is gone is what comes before the first record, or everything.
	e.st.dropped = e.last
	if k, _ := tx.Bucket(bucketLog).Cursor().First(); len(k) == 8 {
		e.st.dropped = binary.BigEndian.Uint64(k) - 1
	}
	return putUint64(meta, keyDropped, e.st.dropped)
}

func getUint64(b *bbolt.Bucket, key []byte) uint64 {
	if v := b.Get(key); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func putUint64(b *bbolt.Bucket, key []byte, v uint64) error {
	return b.Put(key, binary.BigEndian.AppendUint64(nil, v))
}

// Listen implements hub.Engine. It must be called before the first Append,
// so the writer's last Seq is the head.
func (e *Engine) Listen(feed func(hub.Batch)) (hub.Position, error) {
	epoch := e.epoch
	f := func(us []*hub.Update) {
		feed(hub.Batch{Epoch: epoch, After: us[0].Seq - 1, Updates: us})
	}
	e.feed.Store(&f)
	return hub.Position{Epoch: e.epoch, Seq: e.headSeq()}, nil
}

// headSeq is the Seq of the last update appended and visible to Read.
func (e *Engine) headSeq() uint64 {
	e.mu.RLock()
	last := e.tail.last()
	e.mu.RUnlock()
	return max(last, e.treeLast.Load())
}

// Append implements hub.Engine. The feed has been called with u when Append
// returns nil. ids must not contain NUL and be at most MaxIDLen bytes.
func (e *Engine) Append(ctx context.Context, u *hub.Update) error {
	if strings.IndexByte(u.ID, 0) >= 0 {
		return errors.New("append: id contains NUL")
	}
	if len(u.ID) > MaxIDLen {
		return fmt.Errorf("append: id of %d bytes is longer than %d", len(u.ID), MaxIDLen)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-e.quit:
		return hub.ErrClosed
	default:
	}
	if err := e.stopErr(); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	rec, err := u.MarshalBinary()
	if err != nil {
		return fmt.Errorf("append: %w", err)
	}
	r := &request{u: u, rec: rec, done: make(chan error, 1)}
	if err := e.handOver(ctx, r); err != nil {
		return err
	}
	// The writer has taken u: it is in a transaction now, and the answer
	// comes whatever ctx does.
	return <-r.done
}

// handOver gives r to the writer. While the tail is full the writer takes
// nothing, and r waits for room up to the tail wait.
func (e *Engine) handOver(ctx context.Context, r *request) error {
	e.coming.Add(1)
	defer e.coming.Add(-1)
	full := *e.full.Load()
	var (
		timer  *time.Timer
		waited <-chan time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case e.reqs <- r:
			return nil
		case <-ctx.Done():
			if timer != nil {
				return fmt.Errorf("append: waiting for room in a full journal tail: %w", ctx.Err())
			}
			return ctx.Err()
		case <-e.quit:
			return hub.ErrClosed
		case <-full:
			full = nil
			timer = time.NewTimer(max(e.tailWait, 0))
			waited = timer.C
		case <-waited:
			return fmt.Errorf("append: %w (waited %v for the history file)", ErrTailFull, max(e.tailWait, 0))
		}
	}
}

// run is the writer: the only goroutine that writes to the journal. It
// turns the appends pending at once into one journal write and one sync.
func (e *Engine) run() {
	defer close(e.ended)
	batch := make([]*request, 0, e.maxBatch)
	for {
		room, ok := e.waitRoom()
		if !ok {
			return
		}
		select {
		case <-e.quit:
			return
		case r := <-e.reqs:
			batch = append(batch[:0], r)
			room -= len(r.rec)
		}
		// Take every append pending now, while the tail has room (it
		// only shrinks meanwhile). One that is on its way (it called
		// Append and is about to hand its request over) is worth a yield
		// or two: a sync costs far more than waiting for it.
		for yields := 0; len(batch) < e.maxBatch && room > 0; {
			select {
			case r := <-e.reqs:
				batch = append(batch, r)
				room -= len(r.rec)
				continue
			default:
			}
			if yields == maxYields || e.coming.Load() == 0 {
				break
			}
			runtime.Gosched()
			yields++
		}
		e.commit(batch)
		clear(batch)
	}
}

// waitRoom returns the room left in the tail once it has some, or false at
// Close. While it waits, the appends waiting to hand their requests over
// count their tail wait.
func (e *Engine) waitRoom() (int, bool) {
	room := e.maxTail - e.tailBytes()
	if room > 0 {
		return room, true
	}
	close(*e.full.Load())
	select {
	case e.poke <- struct{}{}:
	default:
	}
	for room <= 0 {
		select {
		case <-e.quit:
			return 0, false
		case <-e.room:
		}
		room = e.maxTail - e.tailBytes()
	}
	full := make(chan struct{})
	e.full.Store(&full)
	return room, true
}

func (e *Engine) tailBytes() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.tail.bytes
}

// maxYields bounds how often the writer yields, before it commits, for
// appends on their way: called, not yet handed over. With 64 publishers
// over HTTP (herald bench publish) the yields took batches from 12 appends
// per sync to 16.
const maxYields = 4

// commit journals batch, makes it visible in the tail, feeds it and
// answers each Append.
func (e *Engine) commit(batch []*request) {
	if err := e.stopErr(); err != nil {
		e.fail(batch, err)
		return
	}
	if e.j.full() {
		if e.treeLast.Load() >= e.j.last[e.j.other()] {
			if err := e.j.restart(e.j.other()); err != nil {
				e.fail(batch, err)
				return
			}
			e.urgent.Store(false)
		} else {
			e.urgent.Store(true)
		}
	}
	for i, r := range batch {
		e.j.add(e.last+1+uint64(i), r.rec)
	}
	if err := e.j.commit(); err != nil {
		// The journal has erased what the commit may have written, or
		// is broken: then the tree must learn where the acknowledged
		// appends end before these are refused.
		e.commitFailures.Add(1)
		if errors.Is(err, ErrFailed) {
			err = e.stop(err)
		}
		e.fail(batch, err)
		return
	}
	us := make([]*hub.Update, len(batch))
	for i, r := range batch {
		e.last++
		r.u.Seq = e.last
		us[i] = r.u
	}
	e.mu.Lock()
	was := len(e.tail.entries)
	e.tail.add(batch)
	now, nowBytes := len(e.tail.entries), e.tail.bytes
	e.mu.Unlock()
	e.count.Add(int64(len(batch)))
	e.commits.Add(1)
	if feed := e.feed.Load(); feed != nil {
		(*feed)(us)
	}
	for _, r := range batch {
		r.done <- nil
	}
	// Wake the applier when the tail starts, when it is due in full, and
	// when this file is full and the other still waits for the tree.
	if was == 0 || now >= e.applyCount || nowBytes >= min(e.applyBytes, e.maxTail) || e.urgent.Load() {
		select {
		case e.poke <- struct{}{}:
		default:
		}
	}
}

// fail refuses every append of batch.
func (e *Engine) fail(batch []*request, err error) {
	err = fmt.Errorf("append: %w", err)
	for _, r := range batch {
		r.done <- err
	}
}

// Bounds on the idle trim timer.
const (
	minTrimDelay = 5 * time.Millisecond
	maxTrimDelay = time.Minute
	retryDelay   = time.Second
)

// When the applier writes the tail to the tree: at once when it holds
// defaultApplyCount records or defaultApplyBytes bytes, else
// defaultApplyDelay after its first record came. Large transactions make
// the tree's cost per record small; the delay bounds the memory the tail
// takes and how late retention applies to it.
const (
	defaultApplyCount = 4096
	defaultApplyBytes = 4 << 20
	defaultApplyDelay = 50 * time.Millisecond
	// maxApply bounds the records one tree transaction carries.
	maxApply = 8192
	// journalSegment is the size of a journal file after which the writer
	// moves to the other one.
	journalSegment = 8 << 20
)

// applier is the only goroutine that writes records to the tree (the
// writer only puts a fence there when it stops): it moves the tail there
// and trims the history by age when idle, on a timer it owns. When the
// writer has returned, it applies what is left and returns.
func (e *Engine) applier() {
	defer close(e.applied)
	// Trim at once: retention may have been tightened since the last run.
	timer := time.NewTimer(0)
	defer timer.Stop()
	var due, trimAt time.Time // zero: nothing scheduled
	trimAt = time.Now()
	// After a failed transaction, the next waits retryDelay however
	// often the writer wakes us: a failing tree is not hammered, nor is
	// the log flooded.
	var retryAt time.Time
	for {
		select {
		case <-e.ended:
			e.applyAll()
			return
		case <-e.poke:
		case <-timer.C:
		}
		now := time.Now()
		e.mu.RLock()
		n, size := len(e.tail.entries), e.tail.bytes
		e.mu.RUnlock()
		ready := n >= e.applyCount || size >= min(e.applyBytes, e.maxTail) || e.urgent.Load() ||
			!due.IsZero() && !now.Before(due)
		switch {
		case n == 0:
			due = time.Time{}
		case ready && !now.Before(retryAt):
			next, err := e.apply()
			switch {
			case err != nil:
				e.logger.Error("write history", "err", err)
				due = now.Add(retryDelay)
				retryAt = due
			case n > e.maxApply:
				due = now // more to do: come back at once
			default:
				// Appends that came during the transaction found the
				// tail busy and did not wake us: give them their delay.
				e.mu.RLock()
				left := len(e.tail.entries)
				e.mu.RUnlock()
				due = time.Time{}
				if left > 0 {
					due = now.Add(e.applyDelay)
				}
			}
			trimAt = deadline(now, next)
		case due.IsZero():
			due = now.Add(e.applyDelay)
		}
		if !trimAt.IsZero() && !now.Before(trimAt) {
			trimAt = deadline(now, e.trimIdle())
		}
		wake := due
		if wake.IsZero() || !trimAt.IsZero() && trimAt.Before(wake) {
			wake = trimAt
		}
		timer.Stop()
		if !wake.IsZero() {
			timer.Reset(max(wake.Sub(now), 0))
		}
	}
}

// deadline turns a delay from trim (-1 for none) into a time (zero for
// none).
func deadline(now time.Time, d time.Duration) time.Time {
	if d < 0 {
		return time.Time{}
	}
	return now.Add(d)
}

// applyAll writes the whole tail to the tree, at Close.
func (e *Engine) applyAll() {
	for {
		e.mu.RLock()
		n := len(e.tail.entries)
		e.mu.RUnlock()
		if n == 0 {
			return
		}
		if _, err := e.apply(); err != nil {
			// The journal still holds the rest: the next Open replays it.
			e.logger.Error("write history", "err", err)
			return
		}
	}
}

// apply writes the front of the tail (up to maxApply records) to the tree
// and drops it from the tail. It returns when to trim next, as trim does.
func (e *Engine) apply() (time.Duration, error) {
	if e.applyHook != nil {
		if err := e.applyHook(); err != nil {
			return retryDelay, err
		}
	}
	e.mu.RLock()
	batch := e.tail.entries[:min(len(e.tail.entries), e.maxApply)]
	e.mu.RUnlock()
	next, err := e.applyBatch(batch)
	if err != nil {
		return retryDelay, err
	}
	e.mu.Lock()
	e.tail.drop(len(batch))
	e.mu.Unlock()
	// The writer may be waiting for room.
	select {
	case e.room <- struct{}{}:
	default:
	}
	return next, nil
}

// applyBatch writes batch (records with consecutive Seqs following the
// tree's last) in one transaction, trims, and commits with a sync.
func (e *Engine) applyBatch(batch []entry) (time.Duration, error) {
	now := e.now()
	st := e.st
	var trimmed trimResult
	err := func() error {
		tx, err := e.db.Begin(true)
		if err != nil {
			return err
		}
		err = put(tx, batch, &st)
		if err == nil {
			trimmed, err = e.trim(tx, now, 2*len(batch), &st)
		}
		if err == nil {
			err = putMeta(tx, batch[len(batch)-1].u.Seq, st)
		}
		if err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}()
	if err != nil {
		e.forgetFronts()
		return retryDelay, err
	}
	// Records added to the tree were counted when journaled.
	e.count.Add(st.n - e.st.n - int64(len(batch)))
	e.st = st
	e.treeLast.Store(batch[len(batch)-1].u.Seq)
	e.applies.Add(1)
	return e.delay(trimmed, now), nil
}

// put writes batch to the log, or to the presence bucket, and to the id
// index, and counts it in st.
func put(tx *bbolt.Tx, batch []entry, st *treeState) error {
	log, ids, pres := tx.Bucket(bucketLog), tx.Bucket(bucketIDs), tx.Bucket(bucketPresence)
	// Seqs only grow, so full pages split at the end stay full.
	log.FillPercent = 1
	pres.FillPercent = 1
	// bbolt keeps key slices until the commit: give them their own
	// memory, one allocation per batch.
	size := 0
	for _, en := range batch {
		size += 8 + len(en.u.ID) + 9
	}
	keys := make([]byte, 0, size)
	for _, en := range batch {
		start := len(keys)
		keys = binary.BigEndian.AppendUint64(keys, en.u.Seq)
		k := keys[start:len(keys):len(keys)]
		start = len(keys)
		keys = appendIDKey(keys, en.u.ID, en.u.Seq)
		ik := keys[start:len(keys):len(keys)]
		b := log
		if en.u.Presence {
			b = pres
			st.presence++
		}
		if err := b.Put(k, en.rec); err != nil {
			return err
		}
		if err := ids.Put(ik, empty); err != nil {
			return err
		}
		st.n++
	}
	return nil
}

// forgetFronts drops what trim remembers of the fronts after a failed
// transaction, whose reads may have seen what it rolled back.
func (e *Engine) forgetFronts() {
	e.head.seq, e.presenceHead.seq = 0, 0
}

// trimIdle trims without appending: retention by age holds while nobody
// publishes. It returns when to trim next, or -1 for no timer.
func (e *Engine) trimIdle() time.Duration {
	now := e.now()
	st := e.st
	tx, err := e.db.Begin(true)
	if err != nil {
		e.logger.Error("trim history", "err", err)
		return retryDelay
	}
	trimmed, err := e.trim(tx, now, 2*e.maxBatch, &st)
	if err == nil && st == e.st {
		// Nothing dropped: spare the file a commit and an fsync.
		_ = tx.Rollback()
		return e.delay(trimmed, now)
	}
	if err == nil {
		err = putMeta(tx, e.treeLast.Load(), st)
	}
	if err != nil {
		_ = tx.Rollback()
		e.forgetFronts()
		e.logger.Error("trim history", "err", err)
		return retryDelay
	}
	if err := tx.Commit(); err != nil {
		e.forgetFronts()
		e.logger.Error("trim history", "err", err)
		return retryDelay
	}
	e.count.Add(st.n - e.st.n)
	e.st = st
	return e.delay(trimmed, now)
}

// trimResult says what is left to trim after trim returns.
type trimResult struct {
	more   bool      // the budget ran out before retention was met
	expiry time.Time // when the first record expires, zero if never
	// visited counts the records trim looked at, which tests hold to
	// what it dropped plus one past each front it stopped at.
	visited int
}

// expire notes that a record expires at t.
func (r *trimResult) expire(t time.Time) {
	if r.expiry.IsZero() || t.Before(r.expiry) {
		r.expiry = t
	}
}

func (e *Engine) delay(t trimResult, now time.Time) time.Duration {
	switch {
	case t.more:
		return 0
	case t.expiry.IsZero():
		return -1
	}
	return min(max(t.expiry.Sub(now), minTrimDelay), maxTrimDelay)
}

// trim applies retention to the tree, deleting at most budget records so
// that a backlog never makes one transaction long; st follows what it
// drops. It looks at what it drops and at one record past each front it
// stops at, never at the history kept behind them:
//
//   - presence records go from the front of their bucket while more than
//     maxPresence remain, or while the first is older than maxAge;
//   - then records of the other kind go from the front of the log while
//     more than maxCount remain, or while the first is older than maxAge,
//     each after the presence records before it, so that no presence
//     record outlives an older record of the other kind.
//
// Each step walks its fronts once to choose what goes, then deletes by
// key: a cursor that deletes must seek the front again after each delete,
// and that seek walks every page emptied before it.
func (e *Engine) trim(tx *bbolt.Tx, now time.Time, budget int, st *treeState) (trimResult, error) {
	t := trimmer{
		e:      e,
		log:    tx.Bucket(bucketLog),
		ids:    tx.Bucket(bucketIDs),
		pres:   tx.Bucket(bucketPresence),
		cutoff: now.Add(-e.maxAge),
		budget: budget,
	}
	var res trimResult
	t.presence(st, &res)
	if err := t.flush(st); err != nil {
		return trimResult{}, err
	}
	t.others(st, &res)
	if err := t.flush(st); err != nil {
		return trimResult{}, err
	}
	return res, nil
}

// trimmer is one trim: the buckets, and the keys of the records chosen to
// go, back to back in one buffer.
type trimmer struct {
	e              *Engine
	log, ids, pres *bbolt.Bucket
	cutoff         time.Time
	budget         int // deletes left
	keys           []byte
	drop           []trimKey
}

// trimKey locates the keys of a dropped record in trimmer.keys: its Seq
// (8 bytes) at at, then its id index key up to end, if any.
type trimKey struct {
	at, end  int
	presence bool // in the presence bucket, not the log
}

// presence chooses presence records from the front of their bucket.
func (t *trimmer) presence(st *treeState, res *trimResult) {
	e := t.e
	c := t.pres.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		res.visited++
		seq := binary.BigEndian.Uint64(k)
		over := e.maxPresence > 0 && st.presence-int64(len(t.drop)) > int64(e.maxPresence)
		if !over && e.maxAge <= 0 {
			return
		}
		if !over && e.presenceHead.seq == seq && !e.presenceHead.time.Before(t.cutoff) {
			res.expire(e.presenceHead.time.Add(e.maxAge))
			return
		}
		id, at, corrupt := t.head(seq, v)
		if !over && !corrupt && !at.Before(t.cutoff) {
			e.presenceHead = front{seq: seq, time: at}
			res.expire(at.Add(e.maxAge))
			return
		}
		if t.budget == 0 {
			res.more = true
			return
		}
		t.add(k, id, true)
	}
}

// others chooses records of the other kind from the front of the log,
// each with the presence records before it.
func (t *trimmer) others(st *treeState, res *trimResult) {
	e := t.e
	var excess int64 // beyond maxCount
	if e.maxCount > 0 {
		excess = st.n - st.presence - int64(e.maxCount)
	}
	c := t.log.Cursor()
	// The front of the presence records, read once the first record of
	// the other kind goes.
	var (
		pc     *bbolt.Cursor
		pk, pv []byte
	)
	for k, v := c.First(); k != nil; k, v = c.Next() {
		res.visited++
		seq := binary.BigEndian.Uint64(k)
		over := excess > 0
		if !over && e.maxAge <= 0 {
			return
		}
		if !over && e.head.seq == seq && !e.head.time.Before(t.cutoff) {
			// The front is known and still fresh: save a decode per commit.
			res.expire(e.head.time.Add(e.maxAge))
			return
		}
		id, at, corrupt := t.head(seq, v)
		if !over && !corrupt && !at.Before(t.cutoff) {
			e.head = front{seq: seq, time: at}
			res.expire(at.Add(e.maxAge))
			return
		}
		if pc == nil {
			pc = t.pres.Cursor()
			if pk, pv = pc.First(); pk != nil {
				res.visited++
			}
		}
		for pk != nil && bytes.Compare(pk, k) < 0 {
			if t.budget == 0 {
				res.more = true
				return
			}
			pid, _, _ := t.head(binary.BigEndian.Uint64(pk), pv)
			t.add(pk, pid, true)
			if pk, pv = pc.Next(); pk != nil {
				res.visited++
			}
		}
		if t.budget == 0 {
			res.more = true
			return
		}
		t.add(k, id, false)
		excess--
	}
}

// head reads the id and Time of the record v at seq. A record that cannot
// be decoded must not wedge the applier: it is dropped, its index key
// left behind, harmlessly pointing at nothing.
func (t *trimmer) head(seq uint64, v []byte) (id []byte, at time.Time, corrupt bool) {
	id, at, err := hub.RecordHead(v)
	if err != nil {
		t.e.logger.Error("drop corrupt record", "seq", seq, "err", err)
		return nil, time.Time{}, true
	}
	return id, at, false
}

// add chooses the record with log key k and id (nil if unknown) to go.
func (t *trimmer) add(k, id []byte, presence bool) {
	at := len(t.keys)
	t.keys = append(t.keys, k...)
	if id != nil {
		t.keys = appendIDKey(t.keys, id, binary.BigEndian.Uint64(k))
	}
	t.drop = append(t.drop, trimKey{at: at, end: len(t.keys), presence: presence})
	t.budget--
}

// flush deletes the records chosen so far, and accounts for them in st.
func (t *trimmer) flush(st *treeState) error {
	// One cursor per bucket for all the deletes: Bucket.Delete makes a
	// new one each time. Backwards, because bbolt deletes from a page
	// in memory by moving the keys after it: the last keys of a page
	// leave nothing to move.
	lc, ic, pc := t.log.Cursor(), t.ids.Cursor(), t.pres.Cursor()
	for i := len(t.drop) - 1; i >= 0; i-- {
		d := t.drop[i]
		k := t.keys[d.at : d.at+8]
		seq := binary.BigEndian.Uint64(k)
		if d.at+8 < d.end {
			if err := deleteKey(ic, t.keys[d.at+8:d.end]); err != nil {
				return err
			}
		}
		c := lc
		if d.presence {
			c = pc
		}
		if err := deleteKey(c, k); err != nil {
			return err
		}
		st.n--
		if d.presence {
			st.presence--
			st.droppedPresence = max(st.droppedPresence, seq)
		} else {
			st.dropped = max(st.dropped, seq)
		}
	}
	t.keys, t.drop = t.keys[:0], t.drop[:0]
	return nil
}

// deleteKey deletes key, if present, through c.
func deleteKey(c *bbolt.Cursor, key []byte) error {
	if k, _ := c.Seek(key); !bytes.Equal(k, key) {
		return nil
	}
	return c.Delete()
}

// putMeta records the tree's last Seq and state, in the transaction that
// changes them.
func putMeta(tx *bbolt.Tx, last uint64, st treeState) error {
	meta := tx.Bucket(bucketMeta)
	for _, kv := range [...]struct {
		key []byte
		v   uint64
	}{
		{keyLast, last},
		{keyCount, uint64(st.n)},
		{keyPresence, uint64(st.presence)},
		{keyDropped, st.dropped},
		{keyDroppedPresence, st.droppedPresence},
	} {
		if err := putUint64(meta, kv.key, kv.v); err != nil {
			return err
		}
	}
	return nil
}

// appendIDKey appends the index key of id at seq: id, NUL, big-endian seq.
// ids never contain NUL, so id + NUL is a prefix of the keys of id only.
func appendIDKey[S ~string | ~[]byte](b []byte, id S, seq uint64) []byte {
	b = append(b, id...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, seq)
}

// Lookup implements hub.Engine with one index Seek in the tree and one map
// lookup in the tail.
func (e *Engine) Lookup(ctx context.Context, id string) (hub.Position, bool, error) {
	// The head first: an update with id that retention drops during the
	// lookup was appended before it.
	head := e.headSeq()
	seq, found, err := e.lookup(id)
	if !found {
		seq = head
	}
	return hub.Position{Epoch: e.epoch, Seq: seq}, found, err
}

func (e *Engine) lookup(id string) (seq uint64, found bool, err error) {
	if e.closed.Load() {
		return 0, false, hub.ErrClosed
	}
	if strings.IndexByte(id, 0) >= 0 || len(id) > MaxIDLen {
		return 0, false, nil // never stored
	}
	// The tail first: a record leaves it only once the tree has it, so
	// whatever moves between the two looks is seen in one of them. The
	// tree's records are older than the tail's.
	e.mu.RLock()
	first, inTail := e.tail.first(id)
	e.mu.RUnlock()
	prefix := append([]byte(id), 0)
	err = e.db.View(func(tx *bbolt.Tx) error {
		k, _ := tx.Bucket(bucketIDs).Cursor().Seek(prefix)
		if len(k) == len(prefix)+8 && bytes.HasPrefix(k, prefix) {
			seq, found = binary.BigEndian.Uint64(k[len(prefix):]), true
		}
		return nil
	})
	if err != nil {
		return 0, false, e.viewErr(err)
	}
	if !found && inTail {
		return first, true, nil
	}
	return seq, found, nil
}

// Read implements hub.Engine. It copies at most limit records out of one
// short read transaction (a read transaction held long would stop the file
// from being remapped as it grows), then takes the rest from the tail.
func (e *Engine) Read(ctx context.Context, after hub.Position, limit int) (hub.Range, error) {
	if after.Epoch != e.epoch {
		if e.closed.Load() {
			return hub.Range{}, hub.ErrClosed
		}
		return hub.Range{}, hub.ErrEpoch
	}
	// The head before the read: every update fed before it is at most
	// head, and found below unless retention dropped it.
	head := e.headSeq()
	s, err := e.read(after.Seq, limit)
	if err != nil {
		return hub.Range{}, err
	}
	r := hub.Range{Updates: s.updates, Gap: s.gap, PresenceGap: s.presenceGap, Head: head}
	if n := len(s.updates); n > 0 {
		r.Head = max(head, s.updates[n-1].Seq)
	}
	return r, nil
}

// span is what read finds after a position: the updates, and whether
// updates of each kind after it are no longer retained.
type span struct {
	updates          []*hub.Update
	gap, presenceGap bool
}

// read returns what the history holds after the Seq after, as of one
// moment: the tree's read transaction, with the tail as read before it for
// what the tree did not hold yet; or, when that tail starts right after
// the position or before, as of the moment it was read.
func (e *Engine) read(after uint64, limit int) (span, error) {
	if limit <= 0 {
		return span{}, errors.New("read: limit must be positive")
	}
	if e.closed.Load() {
		return span{}, hub.ErrClosed
	}
	if after == math.MaxUint64 {
		return span{}, nil
	}
	// The tail as of now, before the tree is read: what moves to the tree
	// in between is found in both, never in neither.
	e.mu.RLock()
	snap := tail{entries: e.tail.entries}
	e.mu.RUnlock()
	var s span
	cut := false // stopped before a corrupt record
	// A tail that starts at after+1 or before answers alone, for the
	// moment before the applier moved its first entry to the tree: then
	// retention had dropped nothing after the position.
	if len(snap.entries) == 0 || after+1 < snap.entries[0].u.Seq {
		err := e.db.View(func(tx *bbolt.Tx) error {
			// What retention dropped, as of this transaction: the tail
			// taken before it holds everything the tree does not.
			meta := tx.Bucket(bucketMeta)
			s.gap = after < getUint64(meta, keyDropped)
			s.presenceGap = after < getUint64(meta, keyDroppedPresence)
			treeLast := getUint64(meta, keyLast)
			// The log and the presence bucket, merged in Seq order.
			start := binary.BigEndian.AppendUint64(nil, after+1)
			lc, pc := tx.Bucket(bucketLog).Cursor(), tx.Bucket(bucketPresence).Cursor()
			lk, lv := lc.Seek(start)
			pk, pv := pc.Seek(start)
			for (lk != nil || pk != nil) && len(s.updates) < limit {
				k, v, presence := lk, lv, false
				if lk == nil || pk != nil && bytes.Compare(pk, lk) < 0 {
					k, v, presence = pk, pv, true
					pk, pv = pc.Next()
				} else {
					lk, lv = lc.Next()
				}
				u := &hub.Update{Seq: binary.BigEndian.Uint64(k)}
				if err := u.UnmarshalBinary(v); err != nil {
					// As trim does: a record that cannot be decoded is
					// lost, not a wall every later read runs into. It
					// ends a batch, so that the next read starts with
					// it, and reports it as a gap of its kind.
					e.logger.Error("skip corrupt record", "seq", u.Seq, "err", err)
					if len(s.updates) > 0 {
						cut = true
						return nil
					}
					if presence {
						s.presenceGap = true
					} else {
						s.gap = true
					}
					continue
				}
				if s.updates == nil {
					s.updates = make([]*hub.Update, 0, min(limit, 256))
				}
				s.updates = append(s.updates, u)
			}
			if len(s.updates) < limit {
				// The tree holds nothing more up to its last Seq: the
				// tail goes on from there, whatever it held before.
				after = max(after, treeLast)
			}
			return nil
		})
		if err != nil {
			return span{}, fmt.Errorf("read: %w", e.viewErr(err))
		}
		if n := len(s.updates); n > 0 {
			after = max(after, s.updates[n-1].Seq)
		}
	}
	if len(s.updates) == limit || cut {
		return s, nil
	}
	rest := snap.after(after)
	rest = rest[:min(len(rest), limit-len(s.updates))]
	if s.updates == nil && len(rest) > 0 {
		s.updates = make([]*hub.Update, 0, len(rest))
	}
	for _, en := range rest {
		s.updates = append(s.updates, en.u)
	}
	return s, nil
}

func (e *Engine) viewErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return hub.ErrClosed
	}
	return err
}

// HistoryLen implements hub.Stats.
func (e *Engine) HistoryLen() int { return int(e.count.Load()) }

// Close implements hub.Closer: it stops the writer once its current batch
// is journaled, fed and answered, lets the applier write the tail to the
// tree, then closes the files, waiting for reads in progress.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		close(e.quit)
		<-e.ended
		<-e.applied
		<-e.warmed
		e.closed.Store(true)
		e.unregister()
		e.closeErr = errors.Join(e.j.close(), e.db.Close())
	})
	return e.closeErr
}
