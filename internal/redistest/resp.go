package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The helpers speak just enough RESP to drive test servers, so that this
// package needs no Redis client and the client under test is never the
// tool that checks it.

// Limits on what a reply may claim, so a corrupt length cannot make the
// reader allocate without bound.
const (
	maxBulk  = 64 << 20
	maxElems = 1 << 20
	maxDepth = 32
)

// reply is one RESP2 or RESP3 value.
type reply struct {
	kind  byte    // '+', '-', ':', '$' or '*'; RESP3 scalars keep their byte; 0 is a null
	text  string  // the value of every kind but '*'
	elems []reply // '*': arrays, and RESP3 sets, pushes and maps (keys and values in turn)
}

func (r reply) isError() bool { return r.kind == '-' }

// String renders the reply as a test reads it: a string, integer or error
// as its text, a null as "(nil)", an array as its elements between
// brackets, separated by spaces.
func (r reply) String() string {
	switch r.kind {
	case 0:
		return "(nil)"
	case '*':
		var b strings.Builder
		b.WriteByte('[')
		for i, e := range r.elems {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(e.String())
		}
		b.WriteByte(']')
		return b.String()
	default:
		return r.text
	}
}

// fields reads a flat array of names and values, the shape of SENTINEL
// replicas' entries.
func (r reply) fields() map[string]string {
	m := make(map[string]string, len(r.elems)/2)
	for i := 0; i+1 < len(r.elems); i += 2 {
		m[r.elems[i].text] = r.elems[i+1].text
	}
	return m
}

var errProtocol = errors.New("protocol error")

func readReply(br *bufio.Reader, depth int) (reply, error) {
	if depth > maxDepth {
		return reply{}, fmt.Errorf("%w: nested deeper than %d", errProtocol, maxDepth)
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return reply{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return reply{}, fmt.Errorf("%w: line %q", errProtocol, line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+', '-', ':', ',', '#', '(':
		return reply{kind: kind, text: body}, nil
	case '_':
		return reply{}, nil
	case '$', '=', '!':
		n, err := strconv.Atoi(body)
		if err != nil || n > maxBulk {
			return reply{}, fmt.Errorf("%w: bulk length %q", errProtocol, body)
		}
		if n < 0 {
			return reply{}, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return reply{}, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return reply{}, fmt.Errorf("%w: bulk string not ended by CRLF", errProtocol)
		}
		text := string(buf[:n])
		switch kind {
		case '=': // verbatim string: "txt:" or "mkd:" before the text
			if len(text) >= 4 && text[3] == ':' {
				text = text[4:]
			}
			kind = '$'
		case '!':
			kind = '-'
		}
		return reply{kind: kind, text: text}, nil
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(body)
		if err != nil || n > maxElems {
			return reply{}, fmt.Errorf("%w: aggregate length %q", errProtocol, body)
		}
		if n < 0 {
			return reply{}, nil
		}
		if kind == '%' || kind == '|' {
			n *= 2
		}
		elems := make([]reply, 0, min(n, 1024))
		for range n {
			e, err := readReply(br, depth+1)
			if err != nil {
				return reply{}, err
			}
			elems = append(elems, e)
		}
		if kind == '|' {
			// Attributes annotate the reply that follows them.
			return readReply(br, depth)
		}
		return reply{kind: '*', elems: elems}, nil
	default:
		return reply{}, fmt.Errorf("%w: unknown type %q", errProtocol, kind)
	}
}

func appendCommand(b []byte, args []string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, "\r\n"...)
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, "\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

// command sends args to the server at addr on a connection of its own and
// reads one reply, all within timeout. An error reply is a reply, not an
// error: the error is for the connection failing.
func command(addr string, timeout time.Duration, args ...string) (reply, error) {
	if len(args) == 0 {
		return reply{}, errors.New("no command")
	}
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return reply{}, fmt.Errorf("%s: %w", args[0], err)
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return reply{}, fmt.Errorf("%s: %w", args[0], err)
	}
	if _, err := conn.Write(appendCommand(nil, args)); err != nil {
		return reply{}, fmt.Errorf("%s: %w", args[0], err)
	}
	r, err := readReply(bufio.NewReader(conn), 0)
	if err != nil {
		return reply{}, fmt.Errorf("%s: %w", args[0], err)
	}
	return r, nil
}

// infoField returns the value of key in an INFO reply, "" when absent.
func infoField(info, key string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), key+":"); ok {
			return v
		}
	}
	return ""
}
