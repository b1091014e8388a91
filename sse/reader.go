package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// MaxLineSize bounds one line of an incoming stream; longer lines fail with
// ErrLineTooLong instead of growing memory without limit.
const MaxLineSize = 1 << 20

// ErrLineTooLong reports a line over MaxLineSize.
var ErrLineTooLong = errors.New("sse: line too long")

// Reader parses an event stream as the HTML standard's EventSource does:
// lines end with CR, LF or CRLF, a leading BOM is skipped, comments are
// ignored, an event is dispatched at a blank line when it has data, and the
// last event id persists from one event to the next.
type Reader struct {
	r       *bufio.Reader
	lastID  string
	reconn  string // the reconnection time in effect, from the last valid retry field
	started bool
	pendCR  bool // the previous line ended with CR: skip one LF
	data    strings.Builder
	typ     string
	retry   string
	hasData bool
	line    []byte
}

// NewReader returns a Reader that parses r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 16<<10)}
}

// LastEventID returns the last event id buffer: the id a client sends as
// Last-Event-ID when it reconnects.
func (r *Reader) LastEventID() string { return r.lastID }

// Retry returns the reconnection time in milliseconds set by the last
// valid retry field, or "" if none came. Like EventSource, it takes effect
// as soon as the line is read, even if no event follows (a hub that closes
// a stream with only a retry line still sets it).
func (r *Reader) Retry() string { return r.reconn }

// Next returns the next dispatched event. Event.ID is the last event id at
// dispatch time. Event.Retry is the last retry field seen since the
// previous event, if any. At the end of the stream Next returns io.EOF; an
// event not terminated by a blank line is discarded, as the standard says.
func (r *Reader) Next() (Event, error) {
	for {
		line, err := r.readLine()
		if err != nil {
			return Event{}, err
		}
		if len(line) == 0 {
			if !r.hasData {
				r.typ = ""
				continue
			}
			ev := Event{ID: r.lastID, Type: r.typ, Data: r.data.String(), Retry: r.retry}
			r.data.Reset()
			r.typ, r.retry, r.hasData = "", "", false
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(name) {
		case "data":
			if r.hasData {
				r.data.WriteByte('\n')
			}
			r.data.Write(value)
			r.hasData = true
		case "event":
			r.typ = string(value)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.lastID = string(value)
			}
		case "retry":
			if len(value) > 0 && isDigits(value) {
				r.retry = string(value)
				r.reconn = r.retry
			}
		}
	}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// readLine returns the next line without its terminator. The returned slice
// is valid until the next call.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		c, err := r.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(r.line) > 0 {
				// A last line without terminator is not a complete line.
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if r.pendCR {
			r.pendCR = false
			if c == '\n' {
				continue
			}
		}
		if !r.started {
			r.started = true
			// U+FEFF encoded as UTF-8 at the very start is skipped.
			if c == 0xEF {
				if b, _ := r.r.Peek(2); len(b) == 2 && b[0] == 0xBB && b[1] == 0xBF {
					_, _ = r.r.Discard(2)
					continue
				}
			}
		}
		switch c {
		case '\n':
			return r.line, nil
		case '\r':
			r.pendCR = true
			return r.line, nil
		}
		if len(r.line) >= MaxLineSize {
			return nil, ErrLineTooLong
		}
		r.line = append(r.line, c)
	}
}
