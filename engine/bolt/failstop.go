package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
)

// ErrFailed is wrapped by every Append after a journal commit failed and
// what it may have written could not be erased either: the journal file's
// state is unknown, so the engine takes no more appends until a restart,
// as databases do after a failed fsync. What was acknowledged stays
// readable.
var ErrFailed = errors.New("history stopped after a write failure; restart herald")

// ErrTailFull is wrapped by an Append that waited Options.TailWait for room
// in the tail, the journaled updates not yet in the history file: the
// file is not keeping up, or cannot be written.
var ErrTailFull = errors.New("journal tail full: the history file is not keeping up")

// keyFence, in the meta bucket, holds the last acknowledged Seq while the
// journal may hold refused frames beyond it: Open replays none of them.
var keyFence = []byte("fence")

// stop is called by the writer when a failed commit could not be erased
// (err wraps ErrFailed), before the appends of that commit are answered.
// Frames of the commit may be in the journal and be read back at the next
// Open, so the tree, a separate file with its own syncs, is told where
// the acknowledged ones end. Only if that fails too can a refused append
// come back; the error and the log say so.
func (e *Engine) stop(err error) error {
	last := e.last
	ferr := e.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyFence, binary.BigEndian.AppendUint64(nil, last))
	})
	if ferr != nil {
		err = fmt.Errorf("%w; fencing the journal at %d: %w (the refused appends may come back at the next start)", err, last, ferr)
	}
	e.stopped.Store(&err)
	e.logger.Error("history stopped: restart herald", "err", err, "last", last)
	return err
}

// Healthy implements hub.Health: the error that stopped the engine, nil
// while it takes appends.
func (e *Engine) Healthy() error { return e.stopErr() }

// stopErr returns the error that stopped the engine, nil while it runs.
func (e *Engine) stopErr() error {
	if p := e.stopped.Load(); p != nil {
		return *p
	}
	return nil
}

// readFence returns the fence a stopped engine left, if any.
func (e *Engine) readFence() (last uint64, ok bool, err error) {
	err = e.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyFence); len(v) == 8 {
			last, ok = binary.BigEndian.Uint64(v), true
		}
		return nil
	})
	return last, ok, err
}

// clearFence drops the fence once neither journal file can be read again.
func (e *Engine) clearFence() error {
	return e.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Delete(keyFence)
	})
}

// fenced drops from what the journal files hold every frame past last.
func fenced(found [2][]frame, last uint64) [2][]frame {
	for i, fs := range found {
		for j, f := range fs {
			if f.seq > last {
				found[i] = fs[:j]
				break
			}
		}
	}
	return found
}
