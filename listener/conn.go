package listener

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// conn is a connection handed out by a Listener: it holds a slot until its
// first Close. The methods beyond net.Conn pass through to the accepted
// connection, so that net/http keeps sendfile and splice (ReaderFrom,
// WriterTo) and code that watches the socket still reaches its descriptor
// (syscall.Conn).
type conn struct {
	net.Conn
	l      *Listener
	ip     netip.Addr
	sock   int
	closed atomic.Bool
}

// Close closes the connection and frees its slot, once however many
// goroutines call it.
func (c *conn) Close() error {
	first := c.closed.CompareAndSwap(false, true)
	err := c.Conn.Close()
	if first {
		c.l.release(c.ip)
	}
	return err
}

// NetConn returns the accepted connection. Closing it directly would keep
// the slot taken: close the conn Accept returned instead.
func (c *conn) NetConn() net.Conn { return c.Conn }

// SyscallConn reaches the socket's descriptor.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// ReadFrom lets io.Copy into the connection use sendfile or splice.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// WriteTo lets io.Copy out of the connection use splice.
func (c *conn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, c.Conn)
}

// CloseWrite shuts down the sending side, where the connection has one.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead shuts down the receiving side, where the connection has one.
func (c *conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}
