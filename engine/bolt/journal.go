package bolt

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// The journal is the write-ahead log in front of the tree: an append is
// acknowledged once its record is in the journal and the journal is synced
// (one write and one fdatasync per group of appends). The tree is written
// behind it, in large transactions, and a record leaves the journal's
// concern once the tree holds it.
//
// It is two files used in turn. The writer appends to one until it holds
// journalSegment bytes, then moves to the other, which it overwrites from
// the start, but only once every record in the other is in the tree. Files
// are never truncated: after the first round, every write lands on blocks
// the file already has, and fdatasync has no file metadata to flush.
//
// A round of a file starts with a header that holds a random salt; every
// frame's checksum covers the salt, so frames left over from an earlier
// round (or bytes inside an earlier round's payloads) never pass for
// frames of the current one. Each frame's checksum also covers the one
// before it, so a frame is read only after the very frame that preceded it
// when it was written.
//
// A commit that fails (a short write, a failed fdatasync, a full disk) may
// have put some of its frames in the file anyway: after a failed fsync,
// what the disk holds is unknown. Before its appends are answered, the
// bytes it may have written are overwritten with zeros and synced (erase),
// so a reopen stops where it began and a refused append never comes back.
// The next commit writes at the same place. When the erasure fails too,
// the journal is broken: it writes nothing more, and the engine stops
// taking appends until a restart (see Engine.stop).
//
//	header: "HJ01" | salt uint64 | crc32c(magic, salt) uint32      (16 bytes)
//	frame:  length uint32 | sum uint32 | seq uint64 | record
//	sum = crc32c(previous frame's sum or 0, salt, seq, length, record)
//
// All integers are little-endian. Reading a file stops at the first frame
// that is cut short, fails its checksum or does not follow the previous
// Seq: what follows was never acknowledged.

const (
	journalMagic  = "HJ01"
	journalHeader = 16
	frameHeader   = 16
	// maxFrame bounds a record's length when reading: anything larger is
	// not a frame.
	maxFrame = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journal is owned by the writer goroutine, except at Open and Close.
type journal struct {
	files   [2]*os.File
	cur     int       // the file being appended to
	off     int64     // where the next write goes in files[cur]
	salt    uint64    // of the current round of files[cur]
	last    [2]uint64 // last Seq written to each file in its current round
	segment int64     // size after which the writer moves on
	noSync  bool
	buf     []byte // frames gathered for the next commit
	prev    uint64 // last[cur] before them
	chain   uint32 // sum of the last frame added in this round
	chained uint32 // chain before the frames in buf
	// broken is set when a failed commit could not be erased: what the
	// current file holds past off is unknown, so nothing more is written.
	broken error

	// writeAt and syncData are the file operations of commits and
	// erasures: os.File.WriteAt and fdatasync, which tests replace to
	// inject faults.
	writeAt  func(f *os.File, b []byte, off int64) (int, error)
	syncData func(f *os.File) error
}

// journalPaths names the two journal files of the tree at path.
func journalPaths(path string) [2]string {
	return [2]string{path + "-journal.0", path + "-journal.1"}
}

// frame is one record read back from a journal file.
type frame struct {
	seq uint64
	rec []byte
}

// openJournal opens (creating if needed) the journal files of the tree at
// path and returns the frames each holds in its current round.
func openJournal(path string, segment int64, noSync bool) (*journal, [2][]frame, error) {
	var found [2][]frame
	j := &journal{segment: segment, noSync: noSync, writeAt: (*os.File).WriteAt, syncData: fdatasync}
	created := false
	for i, p := range journalPaths(path) {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			f, err = os.OpenFile(p, os.O_RDWR, 0o600)
		} else if err == nil {
			created = true
		}
		if err != nil {
			j.close()
			return nil, found, fmt.Errorf("open journal: %w", err)
		}
		j.files[i] = f
		data, err := os.ReadFile(p)
		if err != nil {
			j.close()
			return nil, found, fmt.Errorf("read journal: %w", err)
		}
		_, found[i] = scanJournal(data)
	}
	if created && !noSync {
		// A new file's name must survive a crash as well as its contents.
		if err := syncDir(filepath.Dir(path)); err != nil {
			j.close()
			return nil, found, fmt.Errorf("open journal: %w", err)
		}
	}
	return j, found, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// scanJournal returns the salt of a journal file's current round and the
// frames of that round, in order, with consecutive Seqs. A file without a
// valid header holds no frames.
func scanJournal(data []byte) (salt uint64, frames []frame) {
	if len(data) < journalHeader || string(data[:4]) != journalMagic {
		return 0, nil
	}
	if crc32.Checksum(data[:12], castagnoli) != binary.LittleEndian.Uint32(data[12:16]) {
		return 0, nil
	}
	salt = binary.LittleEndian.Uint64(data[4:12])
	var chain uint32
	for off := journalHeader; len(data)-off >= frameHeader; {
		n := binary.LittleEndian.Uint32(data[off:])
		sum := binary.LittleEndian.Uint32(data[off+4:])
		seq := binary.LittleEndian.Uint64(data[off+8:])
		end := off + frameHeader + int(n)
		if n == 0 || n > maxFrame || end > len(data) || end < off {
			break
		}
		rec := data[off+frameHeader : end]
		if frameSum(chain, salt, seq, rec) != sum {
			break
		}
		if seq == 0 || len(frames) > 0 && seq != frames[len(frames)-1].seq+1 {
			break
		}
		frames = append(frames, frame{seq: seq, rec: rec})
		chain = sum
		off = end
	}
	return salt, frames
}

func frameSum(chain uint32, salt, seq uint64, rec []byte) uint32 {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], chain)
	binary.LittleEndian.PutUint64(h[4:], salt)
	binary.LittleEndian.PutUint64(h[12:], seq)
	binary.LittleEndian.PutUint32(h[20:], uint32(len(rec)))
	return crc32.Update(crc32.Checksum(h[:], castagnoli), castagnoli, rec)
}

// recoverFrames joins what the two files hold into the frames after
// applied (the last Seq the tree holds), in order. A file holds one run of
// consecutive Seqs; the two runs may overlap the tree and each other, and
// follow one another. It reports a gap (frames missing between applied and
// the first frame, or between the runs) as an error beside the frames it
// keeps: the ones before the gap.
func recoverFrames(found [2][]frame, applied uint64) ([]frame, error) {
	var runs [][]frame
	for _, fs := range found {
		i, _ := slices.BinarySearchFunc(fs, applied+1, func(f frame, seq uint64) int {
			return cmpSeq(f.seq, seq)
		})
		if i < len(fs) {
			runs = append(runs, fs[i:])
		}
	}
	slices.SortFunc(runs, func(a, b []frame) int { return cmpSeq(a[0].seq, b[0].seq) })
	var out []frame
	next := applied + 1
	for _, run := range runs {
		if run[0].seq > next {
			return out, fmt.Errorf("journal: records %d to %d are missing", next, run[0].seq-1)
		}
		// Skip what the previous run already gave.
		run = run[min(int(next-run[0].seq), len(run)):]
		out = append(out, run...)
		if len(run) > 0 {
			next = run[len(run)-1].seq + 1
		}
	}
	return out, nil
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// restart begins a new round on file i, from its start. Every record the
// file holds must be in the tree.
func (j *journal) restart(i int) error {
	var s [8]byte
	if _, err := rand.Read(s[:]); err != nil {
		return err
	}
	j.cur, j.off, j.last[i], j.chain = i, 0, 0, 0
	j.salt = binary.LittleEndian.Uint64(s[:])
	return nil
}

// add appends the frame of rec at seq to the pending write, after the
// round's header when the round has nothing yet.
func (j *journal) add(seq uint64, rec []byte) {
	if len(j.buf) == 0 {
		j.prev, j.chained = j.last[j.cur], j.chain
	}
	if j.off == 0 && len(j.buf) == 0 {
		j.buf = append(j.buf, journalMagic...)
		j.buf = binary.LittleEndian.AppendUint64(j.buf, j.salt)
		j.buf = binary.LittleEndian.AppendUint32(j.buf, crc32.Checksum(j.buf[:12], castagnoli))
	}
	j.buf = binary.LittleEndian.AppendUint32(j.buf, uint32(len(rec)))
	j.chain = frameSum(j.chain, j.salt, seq, rec)
	j.buf = binary.LittleEndian.AppendUint32(j.buf, j.chain)
	j.buf = binary.LittleEndian.AppendUint64(j.buf, seq)
	j.buf = append(j.buf, rec...)
	j.last[j.cur] = seq
}

// commit writes what add gathered with one write and one fdatasync. On
// error the pending frames are dropped, whatever of them may be in the
// file is erased before commit returns, and the next commit writes at the
// same place: their Seqs go to the next appends. When the erasure fails,
// the error wraps ErrFailed and every later commit returns it.
func (j *journal) commit() error {
	defer func() {
		j.buf = j.buf[:0]
		if cap(j.buf) > 4<<20 {
			j.buf = nil // one large batch must not pin its buffer
		}
	}()
	if j.broken != nil {
		j.last[j.cur], j.chain = j.prev, j.chained
		return j.broken
	}
	f := j.files[j.cur]
	n, err := j.writeAt(f, j.buf, j.off)
	if err == nil && n < len(j.buf) {
		err = io.ErrShortWrite
	}
	if err == nil && !j.noSync {
		err = j.syncData(f)
	}
	if err == nil {
		j.off += int64(len(j.buf))
		return nil
	}
	j.last[j.cur], j.chain = j.prev, j.chained
	err = fmt.Errorf("journal: %w", err)
	if eerr := j.erase(j.off, len(j.buf)); eerr != nil {
		j.broken = fmt.Errorf("%w: %w; erasing it: %w", ErrFailed, err, eerr)
		return j.broken
	}
	return err
}

// eraseChunk bounds the zeros erase writes at once.
const eraseChunk = 64 << 10

// erase overwrites with zeros, and syncs, what a failed commit of n bytes
// at off may have left in the current file: the part of off..off+n that
// the file holds. The first frame header at off then reads as the end of
// the round, and no frame of the failed commit survives beyond it, not
// even one whose bytes a later commit at off happens to repeat (the
// chained sums alone would let such a frame's successors through).
//
// The file's size, not the failed write's count, says how far the commit
// may have reached: os.File.WriteAt leaves out of its count what one
// pwrite wrote before the next one failed (a disk that fills up midway).
// Rewriting every page the failed commit touched is what makes a
// successful sync here mean something: those pages are written again in
// full, and the acknowledged frames before off that share the first one
// were synced by earlier commits. The zeros stay inside the file's
// current size, so a full disk never needs a block for them.
func (j *journal) erase(off int64, n int) error {
	f := j.files[j.cur]
	st, err := f.Stat()
	if err != nil {
		return err
	}
	end := min(off+int64(n), st.Size())
	if end <= off {
		return nil // nothing of the commit reached the file
	}
	zeros := make([]byte, min(end-off, eraseChunk))
	for at := off; at < end; {
		w := zeros[:min(end-at, int64(len(zeros)))]
		m, err := j.writeAt(f, w, at)
		if err == nil && m < len(w) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return err
		}
		at += int64(m)
	}
	if j.noSync {
		return nil
	}
	return j.syncData(f)
}

// invalidate overwrites the header of file i, so that nothing it holds is
// read again, and syncs it.
func (j *journal) invalidate(i int) error {
	n, err := j.writeAt(j.files[i], make([]byte, journalHeader), 0)
	if err == nil && n < journalHeader {
		err = io.ErrShortWrite
	}
	if err != nil {
		return err
	}
	if j.noSync {
		return nil
	}
	return j.syncData(j.files[i])
}

// full reports whether the current file has reached its segment size.
func (j *journal) full() bool { return j.off >= j.segment }

// other is the file the writer moves to next.
func (j *journal) other() int { return 1 - j.cur }

func (j *journal) close() error {
	var errs []error
	for _, f := range j.files {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}
