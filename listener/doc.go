// Package listener is a net.Listener tuned for servers that hold many
// connections: it caps open connections (in all and per client address)
// and the rate of new ones, refusing the excess at once instead of letting
// it queue; it spreads accepting over several SO_REUSEPORT sockets; it
// backs off instead of spinning when the process runs out of file
// descriptors; and it exports what the kernel knows about its accept
// queues, which is where overload shows first.
//
//	l, err := listener.Listen(ctx, "tcp", ":8080", listener.Config{
//		MaxConns:   50_000,
//		Rate:       2_000, Burst: 500,
//		Refuse:     listener.RefuseHTTP(time.Second),
//		Registerer: reg,
//	})
//	...
//	err = srv.Serve(l) // any server that takes a net.Listener
//
// Listen binds the sockets itself (it needs to, for SO_REUSEPORT); Wrap
// takes a listener made elsewhere. Both return a *Listener, whose Accept
// only ever returns admitted connections. Limits are applied on the accept
// path, so refusals come as fast as the server calls Accept, which net/http
// does in a loop. It imports nothing of herald's.
//
// # Refusing
//
// A connection over MaxConns, MaxConnsPerIP or the rate is accepted from
// the kernel and closed at once with SO_LINGER 0, so its client gets a
// reset within a round trip and nothing of it stays (no TIME_WAIT). The
// alternative, not accepting while at the cap, lets the kernel's queue
// fill; clients then wait in it, retry SYNs for seconds, and a full queue
// drops connections silently (see docs/listen-queues.md). An optional
// Config.Refuse hook may write a reply first, under a short deadline so
// that a refused client can never hold the accept path.
//
// A server that knows when it is overloaded says so with
// Config.Overloaded; new connections are then refused (reason
// "overload"). With Config.OverloadPause as well, on Linux, the listener
// goes further: it stops listening, with shutdown(2) on the listening
// socket, which keeps the socket bound but out of the LISTEN state. The
// kernel then answers new connections with a reset as for a closed port
// (ECONNREFUSED at the client), at no cost to the process however fast
// they come, and resets those waiting in the accept queue. SO_REUSEADDR
// is cleared meanwhile so that no other socket can bind the address.
// Every OverloadPause the listener asks Overloaded again; once it says
// false the socket listens again and admits newcomers gradually: 16 in
// the first interval, twice as many in each next one while the server is
// not overloaded, up to 4,096, stopping listening until the interval ends
// once its share is taken. Overload checks need a moment to see what new
// connections cost, and a storm that is still going on when a pause ends
// would otherwise rush in before the check trips again. A socket bound to
// port 0 never pauses (listening again would give it another port).
//
// A connection holds its slot from Accept until its first Close, however
// many goroutines call Close. A connection that is never closed holds its
// slot forever: the cap turns a connection leak into refusals, which the
// metrics show, rather than into descriptor exhaustion.
//
// # Accept goroutines
//
// With one socket, Accept accepts on its caller's goroutine and the
// package starts none. With Config.ReusePort = N > 1 (Linux), N sockets
// share the address, the kernel hashes each new connection to one of them,
// and each socket has an accept goroutine that hands connections to Accept
// through one unbuffered channel. A goroutine holds at most one connection
// until Accept takes it, so when the server stops accepting, connections
// wait in the kernel's queues, where the metrics below see them. Close
// ends every goroutine before it returns.
//
// # Out of descriptors
//
// When accept fails with EMFILE or ENFILE (or ENOBUFS, ENOMEM), the accept
// path sleeps 5 ms, doubling up to 1 s while the error lasts, and
// counts each failure; a plain loop would retry at once and spin a core,
// since the kernel fails the call before looking at the queue. On Linux a
// spare descriptor is kept open: at each failure it is closed, the waiting
// connections are accepted on it one by one and reset (reason "no_fd"),
// and it is taken back, so clients learn within one back-off step (at most
// a second) and the queue is emptied at every step instead of overflowing.
// Config.NoReserveFD turns that off.
//
// # Metrics
//
// On Config.Registerer, with names starting with Config.MetricsPrefix
// ("listener_" by default) and Config.MetricsLabels on every series:
//
//   - open_connections (gauge): connections handed out and not closed.
//   - accepted_total: connections handed out.
//   - refused_total{reason}: limit, per_ip, rate, overload, no_fd.
//   - overload_pauses_total, paused_sockets (gauge) and
//     overload_paused_seconds_total (with Overloaded and OverloadPause):
//     times a socket stopped listening, sockets not listening now, and the
//     time they spent so (counted when each pause ends).
//   - accept_errors_total{kind}: emfile, enfile, enobufs, enomem, other.
//   - accept_queue_length{socket} and accept_queue_max{socket} (Linux,
//     TCP): the kernel's accept queue of each socket now, and its size.
//   - tcp_listen_overflows_total and tcp_listen_drops_total (Linux): the
//     TcpExt ListenOverflows and ListenDrops counters of the network
//     namespace, read at scrape time. They count every listening socket of
//     the namespace, so several listeners export the same numbers.
//
// Where the kernel does not tell, those series are absent rather than
// zero. How to read them: a queue length near its max, with overflows
// rising, means the server does not accept fast enough (or has stopped);
// refused_total rising means a limit is doing its job; accept_errors_total
// with kind emfile means the process is out of descriptors, and
// refused_total{reason="no_fd"} counts the clients that paid for it.
// docs/listen-queues.md tells these apart in an incident.
//
// # Choices
//
// golang.org/x/time/rate is the token bucket: it is the Go team's, and
// Allow costs one mutex and no allocation. TCP_INFO (golang.org/x/sys/unix)
// gives the queue of exactly this listener's sockets without scanning
// /proc/net/tcp. Keep-alive is set with net.KeepAliveConfig on admitted
// connections only, so a refused one costs no setsockopt. The listen
// backlog is the one Go passes (net.core.somaxconn, which also caps it):
// raise that sysctl, not a setting here, to deepen the queue.
//
// # Cost
//
// On a 2-vCPU VM (go test -run '^$' -bench . -benchtime 5000x -count 5):
// the listener's own work per connection, without the kernel
// (BenchmarkAdmit), is 130-160 ns and one 64-byte allocation, 290-360 ns
// with every limit set. A loopback dial, accept and close costs far more:
// BenchmarkAccept's medians were 73 µs with net.Listen and 65-81 µs for
// the variants of this package, a spread that is run-to-run noise on a
// shared machine. A request over a kept-alive connection costs the same
// through it as through net.Listen (BenchmarkHTTPKeepAlive medians, 48 and
// 47 µs).
package listener
