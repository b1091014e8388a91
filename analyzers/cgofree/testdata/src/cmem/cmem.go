// Package cmem holds handlers, workers and wrappers that pass Go strings
// and buffers to a C library.
package cmem

/*
#include <stdlib.h>
#include <string.h>
typedef struct { char *name; void *body; } req_t;
static int valid(const char *s) { return s[0] != 0; }
static void use(const char *s) { (void)s; }
static void send(void *p, size_t n) { (void)p; (void)n; }
static void submit(req_t *r) { (void)r; }
*/
import "C"

import (
	"errors"
	"fmt"
	"net/http"
	"unsafe"
)

var errInvalid = errors.New("invalid name")

// cstr returns a C copy of s that the caller frees.
func cstr(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

// freeString frees a string made by cstr or C.CString.
func freeString(p *C.char) { release(unsafe.Pointer(p)) }

func release(p unsafe.Pointer) { C.free(p) }

// ---- Reported ----

// Passed straight to C and lost.
func logLine(s string) {
	C.use(C.CString(s)) // want `C.CString result is never freed: defer C.free\(unsafe.Pointer\(cs\)\) after the call`
}

// One of two strings is freed.
func setHeader(k, v string) {
	ck := C.CString(k)
	defer C.free(unsafe.Pointer(ck))
	cv := C.CString(v) // want `C.CString result is never freed: defer C.free\(unsafe.Pointer\(cv\)\)`
	C.use(ck)
	C.use(cv)
}

// The early return of a handler skips the free.
func lookupHandler(w http.ResponseWriter, r *http.Request) {
	cs := C.CString(r.URL.Query().Get("name"))
	if C.valid(cs) == 0 {
		http.Error(w, "bad name", http.StatusBadRequest)
		return // want `C memory from C.CString is not freed on the path through this return`
	}
	C.use(cs)
	C.free(unsafe.Pointer(cs))
	w.WriteHeader(http.StatusNoContent)
}

// A size check after the allocation.
func sendBody(body []byte, limit int) error {
	buf := C.malloc(C.size_t(len(body)))
	if len(body) > limit {
		return fmt.Errorf("body of %d bytes over %d", len(body), limit) // want `C memory from C.malloc is not freed on the path through this return: defer C.free right after the allocation`
	}
	copy(unsafe.Slice((*byte)(buf), len(body)), body)
	C.send(buf, C.size_t(len(body)))
	C.free(buf)
	return nil
}

// The variable is reused for a second string before the first is freed.
func pair(a, b string) {
	cs := C.CString(a)
	C.use(cs)
	cs = C.CString(b) // want `cs is overwritten before its C memory from C.CString is freed`
	C.use(cs)
	C.free(unsafe.Pointer(cs))
}

// A worker that frees only the rejected jobs.
func worker(jobs <-chan string) {
	for job := range jobs {
		cs := C.CString(job) // want `C memory from C.CString is not freed`
		if C.valid(cs) == 0 {
			C.free(unsafe.Pointer(cs))
			continue
		}
		C.use(cs)
	}
}

// An SSE loop keeps only the last event and frees that one.
func stream(w http.ResponseWriter, events <-chan string) {
	fl := w.(http.Flusher)
	var last *C.char
	for ev := range events {
		last = C.CString(ev) // want `C memory from C.CString is not freed before the next loop iteration: free last at the end of each iteration`
		C.use(last)
		fmt.Fprintf(w, "data: %s\n\n", ev)
		fl.Flush()
	}
	C.free(unsafe.Pointer(last))
}

// Freed only when there was something to send.
func sendBytes(data []byte) {
	p := C.CBytes(data) // want `C memory from C.CBytes is not freed on every path`
	if len(data) > 0 {
		C.send(p, C.size_t(len(data)))
		C.free(p)
	}
}

// Assigned to the blank identifier.
func reserve() {
	_ = C.calloc(1, 64) // want `C.calloc result is never freed`
}

// The result of a same-package allocator is lost.
func greet(name string) {
	C.use(cstr(name)) // want `cstr result is never freed`
}

// Middleware that tags each request for the C tracer.
func withTrace(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := C.CString(r.Header.Get("X-Trace-Id")) // want `C.CString result is never freed: defer C.free\(unsafe.Pointer\(id\)\)`
		C.use(id)
		next.ServeHTTP(w, r)
	})
}

// The free through a helper is skipped by an error return.
func checkName(name string) error {
	cs := cstr(name)
	if C.valid(cs) == 0 {
		return errInvalid // want `C memory from cstr is not freed on the path through this return`
	}
	freeString(cs)
	return nil
}

type conn struct {
	name *C.char
	tags map[string]*C.char
}

// The field still points at the string after the deferred free.
func (c *conn) setName(n string) {
	cs := C.CString(n)
	defer C.free(unsafe.Pointer(cs)) // want `cs is freed here but still stored in c.name: clear the field or free it in Close`
	c.name = cs
	C.use(c.name)
}

var lastHost *C.char

// A global keeps a freed string.
func remember(host string) {
	cs := C.CString(host)
	lastHost = cs
	C.use(cs)
	C.free(unsafe.Pointer(cs)) // want `cs is freed here but still stored in lastHost`
}

// A map entry keeps a freed string.
func (c *conn) tag(k, v string) {
	cv := C.CString(v)
	c.tags[k] = cv
	C.use(cv)
	freeString(cv) // want `cv is freed here but still stored in c.tags\[k\]`
}

// Read after the free.
func nameLen(s string) int {
	cs := C.CString(s)
	C.use(cs)
	C.free(unsafe.Pointer(cs))
	return int(C.strlen(cs)) // want `cs is used after C.free: move the free after its last use`
}

// A parameter used after it was freed.
func consume(p *C.char) {
	C.free(unsafe.Pointer(p))
	C.use(p) // want `p is used after C.free`
}

// A switch whose error case returns early.
func submitKind(kind string, body []byte) error {
	req := (*C.req_t)(C.malloc(C.sizeof_req_t))
	switch kind {
	case "json", "text":
	default:
		return fmt.Errorf("unknown kind %q", kind) // want `C memory from C.malloc is not freed on the path through this return`
	}
	C.submit(req)
	C.free(unsafe.Pointer(req))
	return nil
}

// The deferred free took the first string; the retried ones leak.
func retry(name string, attempts int) error {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	for i := 0; i < attempts; i++ {
		if C.valid(cs) != 0 {
			return nil
		}
		cs = C.CString(fmt.Sprint(name, i))
	}
	return errInvalid // want `C memory from C.CString is not freed on the path through this return`
}

// A directive without a reason silences nothing.
func careless(s string) {
	//leakvet:ignore
	C.use(C.CString(s)) // want `needs a reason`
}

// ---- Not reported ----

// The usual shape: free deferred right after the allocation.
func deferred(s string) {
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	C.use(cs)
}

// Freed before each return.
func everyPath(s string) error {
	cs := C.CString(s)
	if C.valid(cs) == 0 {
		C.free(unsafe.Pointer(cs))
		return errInvalid
	}
	C.use(cs)
	C.free(unsafe.Pointer(cs))
	return nil
}

// Returned: the caller frees it.
func header(r *http.Request) *C.char {
	cs := C.CString(r.Header.Get("Host"))
	C.use(cs)
	return cs
}

// Stored in a C struct: C owns it now, and the request's owner frees it.
func newRequest(name string, body []byte) *C.req_t {
	req := (*C.req_t)(C.malloc(C.sizeof_req_t))
	req.name = C.CString(name)
	cb := C.CBytes(body)
	req.body = cb
	return req
}

// Freed by a same-package helper, deferred.
func viaHelper(s string) {
	cs := C.CString(s)
	defer freeString(cs)
	C.use(cs)
}

// Kept in a field that the type's Close frees.
func newConn(name string) *conn {
	return &conn{name: C.CString(name), tags: map[string]*C.char{}}
}

func (c *conn) Close() {
	C.free(unsafe.Pointer(c.name))
	c.name = nil
	for k, v := range c.tags {
		freeString(v)
		delete(c.tags, k)
	}
}

// Stored in a field through a local, then owned by the type.
func (c *conn) rename(n string) {
	cs := C.CString(n)
	if c.name != nil {
		C.free(unsafe.Pointer(c.name))
	}
	c.name = cs
}

// malloc checked for nil: nothing to free on that path.
func scratch(n int) error {
	p := C.malloc(C.size_t(n))
	if p == nil {
		return errors.New("out of C memory")
	}
	defer C.free(p)
	C.send(p, C.size_t(n))
	return nil
}

// An out parameter hands it to the caller.
func dup(s string, out **C.char) {
	*out = C.CString(s)
}

// A deferred closure frees it.
func deferredClosure(s string) {
	cs := C.CString(s)
	defer func() {
		C.free(unsafe.Pointer(cs))
	}()
	C.use(cs)
}

// Freed at the end of every iteration.
func eachHeader(h http.Header) {
	for k := range h {
		ck := C.CString(k)
		C.use(ck)
		C.free(unsafe.Pointer(ck))
	}
}

// Freed, then the variable holds a new string.
func twice(a, b string) {
	cs := C.CString(a)
	C.use(cs)
	C.free(unsafe.Pointer(cs))
	cs = C.CString(b)
	C.use(cs)
	C.free(unsafe.Pointer(cs))
}

// A goroutine takes it over and frees it.
func background(s string) {
	cs := C.CString(s)
	go func() {
		defer C.free(unsafe.Pointer(cs))
		C.use(cs)
	}()
}

// Sent to a worker pool that frees each job.
func enqueue(jobs chan<- *C.char, s string) {
	cs := C.CString(s)
	jobs <- cs
}

func drain(jobs <-chan *C.char) {
	for cs := range jobs {
		C.use(cs)
		C.free(unsafe.Pointer(cs))
	}
}

// Handed to Go code in another file that keeps it.
func register(name string) {
	cs := C.CString(name)
	names.add(name, unsafe.Pointer(cs))
}

// An SSE loop that frees each event before the next.
func streamEach(w http.ResponseWriter, events <-chan string) {
	fl := w.(http.Flusher)
	for ev := range events {
		sendEvent(ev)
		fmt.Fprintf(w, "data: %s\n\n", ev)
		fl.Flush()
	}
}

func sendEvent(ev string) {
	cs := C.CString(ev)
	defer C.free(unsafe.Pointer(cs))
	C.use(cs)
}

// The field is cleared after the free.
func (c *conn) withTempName(n string) {
	cs := C.CString(n)
	c.name = cs
	C.use(c.name)
	C.free(unsafe.Pointer(cs))
	c.name = nil
}

// Setting the pointer to nil after the free is no use of it.
func resetName(p *C.char) *C.char {
	C.free(unsafe.Pointer(p))
	p = nil
	if p == nil {
		return C.CString("")
	}
	return p
}

// A panic path needs no free.
func mustValid(s string) {
	cs := C.CString(s)
	if C.valid(cs) == 0 {
		panic("invalid " + s)
	}
	C.use(cs)
	C.free(unsafe.Pointer(cs))
}

// Freed on both branches.
func branches(s string, upper bool) {
	cs := C.CString(s)
	if upper {
		C.use(cs)
		C.free(unsafe.Pointer(cs))
	} else {
		C.free(unsafe.Pointer(cs))
	}
}

// A deferred closure frees the buffer current at return, after growth.
func grow(want []int) {
	n := 64
	buf := C.malloc(C.size_t(n))
	defer func() { C.free(buf) }()
	for _, w := range want {
		if w <= n {
			continue
		}
		C.free(buf)
		n = w
		buf = C.malloc(C.size_t(n))
	}
	C.send(buf, C.size_t(n))
}

// A deliberate, explained leak is silenced.
func processName(s string) {
	//leakvet:ignore the C library keeps this string for the life of the process
	C.use(C.CString(s))
}
