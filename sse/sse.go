// Package sse is the Server-Sent Events wire format: an encoder that builds one
// frame per event, to be shared read-only by every stream that sends it, and a
// parser for clients and tests.
//
// The encoder enforces the serialization rules that keep a publisher from
// injecting fields into the stream: data is split into one "data:" line per
// line of input (CR, LF and CRLF all end a line), and the single-line fields
// (id, event, retry) must not contain CR, LF or NUL.
package sse

import (
	"errors"
	"strings"
)

// Event is one Server-Sent Event.
type Event struct {
	// ID is the "id" field; empty means no id line.
	ID string
	// Type is the "event" field; empty means the default "message" type.
	Type string
	// Data is the "data" field. Line breaks become separate data lines.
	Data string
	// Retry is the "retry" field in milliseconds, as ASCII digits; empty means none.
	Retry string
}

// ErrField reports a single-line field that would break the framing.
var ErrField = errors.New("sse: field contains CR, LF or NUL")

// ErrRetry reports a retry value that is not made of ASCII digits only.
var ErrRetry = errors.New("sse: retry must be ASCII digits")

// Validate reports whether e can be encoded without injecting fields.
func (e *Event) Validate() error {
	if hasBreak(e.ID) || hasBreak(e.Type) {
		return ErrField
	}
	for i := 0; i < len(e.Retry); i++ {
		if e.Retry[i] < '0' || e.Retry[i] > '9' {
			return ErrRetry
		}
	}
	return nil
}

func hasBreak(s string) bool {
	return strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0 || strings.IndexByte(s, 0) >= 0
}

// nextLine splits s at its first line break (CR, LF or CRLF, as the HTML
// parser splits) into the line and the rest; ok is false when s has no
// break. lf is the index of the first LF in s, or -1 if it has none, and
// next is the same for rest, so that a caller walking all the lines scans
// every byte for LF once and for CR once: two vectorised IndexByte scans
// in all, where IndexAny tests a byte at a time and rescanning for LF
// from every CR would be quadratic in a string of CRs.
func nextLine(s string, lf int) (line, rest string, next int, ok bool) {
	head := s
	if lf >= 0 {
		head = s[:lf]
	}
	i := strings.IndexByte(head, '\r')
	if i < 0 {
		i = lf
	}
	if i < 0 {
		return s, "", -1, false
	}
	skip := i + 1
	if s[i] == '\r' && skip < len(s) && s[skip] == '\n' {
		skip++
	}
	rest, next = s[skip:], -1
	if lf >= 0 {
		if next = lf - skip; next < 0 { // the LF is used up: find the next one
			next = strings.IndexByte(rest, '\n')
		}
	}
	return s[:i], rest, next, true
}

// AppendEvent appends the encoded frame of e to dst and returns the extended
// slice. The frame ends with the blank line that dispatches the event. The
// caller must have checked e with Validate; AppendEvent does not re-check the
// single-line fields so that the hot path stays branch-light.
func AppendEvent(dst []byte, e *Event) []byte {
	if e.Type != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, e.Type...)
		dst = append(dst, '\n')
	}
	if e.Retry != "" {
		dst = append(dst, "retry: "...)
		dst = append(dst, e.Retry...)
		dst = append(dst, '\n')
	}
	if e.ID != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, e.ID...)
		dst = append(dst, '\n')
	}
	dst = appendData(dst, e.Data)
	return append(dst, '\n')
}

// appendData writes one "data:" line per line of s, splitting on CR, LF and
// CRLF as the HTML parser does, so a value can never start a new field.
func appendData(dst []byte, s string) []byte {
	lf := strings.IndexByte(s, '\n')
	for {
		line, rest, next, ok := nextLine(s, lf)
		dst = append(dst, "data: "...)
		dst = append(dst, line...)
		dst = append(dst, '\n')
		if !ok {
			return dst
		}
		s, lf = rest, next
	}
}

// EncodedLen returns the exact length AppendEvent will produce for e, so
// callers can size a buffer once.
func EncodedLen(e *Event) int {
	n := 1 // final blank line
	if e.Type != "" {
		n += len("event: ") + len(e.Type) + 1
	}
	if e.Retry != "" {
		n += len("retry: ") + len(e.Retry) + 1
	}
	if e.ID != "" {
		n += len("id: ") + len(e.ID) + 1
	}
	s := e.Data
	lf := strings.IndexByte(s, '\n')
	for {
		line, rest, next, ok := nextLine(s, lf)
		n += len("data: ") + len(line) + 1
		if !ok {
			return n
		}
		s, lf = rest, next
	}
}

// Encode returns the frame of e in a buffer of exactly the right size.
func Encode(e *Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return AppendEvent(make([]byte, 0, EncodedLen(e)), e), nil
}

// Heartbeat is the comment frame sent to keep idle streams open through
// intermediaries. It dispatches no event. It is a constant so that no
// importer can change what every stream sends; a writer that needs it as
// bytes keeps its own copy, or appends it (AppendComment with no text
// gives the same frame).
const Heartbeat = ":\n\n"

// AppendComment appends a comment line. Line breaks in text are replaced by
// spaces so the comment stays one line.
func AppendComment(dst []byte, text string) []byte {
	dst = append(dst, ':')
	if text != "" {
		dst = append(dst, ' ')
		for i := 0; i < len(text); i++ {
			c := text[i]
			if c == '\r' || c == '\n' || c == 0 {
				c = ' '
			}
			dst = append(dst, c)
		}
	}
	return append(dst, '\n', '\n')
}
