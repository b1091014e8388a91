package client

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-hub/herald/sse"
)

// DefaultBuffer is the capacity of a subscription's Events channel when
// SubscribeOptions.Buffer is zero.
const DefaultBuffer = 64

// stableAfter is how long a connection must last for the next
// reconnection to start again from the smallest backoff, even if it
// delivered nothing (a quiet topic is not a failing hub).
const stableAfter = 10 * time.Second

// SubscribeOptions says what a subscription receives and where it starts.
type SubscribeOptions struct {
	// Topics are exact topics (match=) for draft-08, topic selectors
	// (topic=: exact topics or URI templates) with Config.Draft7.
	Topics []string
	// URLPatterns are URL patterns (match_urlpattern=), draft-08 only.
	URLPatterns []string
	// LastEventID is the resume point of the first connection: "" starts
	// live, "earliest" asks for every update the hub retains, any other
	// value the updates after the one with that id.
	LastEventID string
	// Buffer is the Events channel's capacity; zero means DefaultBuffer.
	Buffer int
	// OnConnect, when set, is called on every established connection,
	// the first included, before that connection's events are delivered.
	// It runs on the subscription's goroutine: while it runs, no event is
	// read.
	OnConnect func(ConnectInfo)
}

// ConnectInfo describes one established connection of a subscription.
type ConnectInfo struct {
	// Attempt counts the connection attempts so far, failed ones
	// included: 1 for the first connection.
	Attempt int
	// Requested is the Last-Event-ID sent, "" if none.
	Requested string
	// ResumedFrom is the hub's answer to a resume: Mercure-Last-Event-ID
	// (draft-08; Last-Event-ID when a hub sends only that) or
	// Last-Event-ID (draft-07). It is the id of the update preceding the
	// first one the hub will send, or "earliest".
	ResumedFrom string
	// PossibleLoss is Requested != "" && ResumedFrom != Requested: the
	// hub could not resume exactly where asked (the id fell out of its
	// history, or it does not say), so updates may have been missed.
	PossibleLoss bool
}

// Event is one event received from the hub.
type Event struct {
	// ID is the event's id: the hub's id of the update.
	ID string
	// Type is the event type; "" means the default "message".
	Type string
	// Data is the update's content.
	Data string
}

// Subscription is a subscription that reconnects and resumes by itself.
// One goroutine, started by Subscribe and waited for by Close, reads the
// stream and delivers the events; it ends when the context passed to
// Subscribe ends, when Close is called, or on a permanent error.
type Subscription struct {
	c      *Client
	opts   SubscribeOptions
	target string // the subscribe URL
	ctx    context.Context
	cancel context.CancelFunc
	events chan Event
	done   chan struct{}
	lastID atomic.Pointer[string] // id of the last event delivered

	// retry is the hub's last retry field, if hasRetry; only the
	// goroutine uses them.
	retry    time.Duration
	hasRetry bool

	mu  sync.Mutex
	err error
}

// Subscribe opens a subscription and returns once its first connection
// is established (HTTP 200) or has failed. The first attempt is not
// retried: its error is returned, a *HubError for an answer other than
// 200, so that a wrong URL, token or selector shows at once. Later
// connections are retried (see the package doc).
//
// ctx bounds the whole subscription, not only this call.
func (c *Client) Subscribe(ctx context.Context, o SubscribeOptions) (*Subscription, error) {
	if len(o.Topics) == 0 && len(o.URLPatterns) == 0 {
		return nil, errors.New("subscribe: no topic and no URL pattern")
	}
	if c.cfg.Draft7 && len(o.URLPatterns) > 0 {
		return nil, errors.New("subscribe: URL patterns are draft-08 only")
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	u := *c.hub
	q := u.Query()
	if c.cfg.Draft7 {
		q["topic"] = append(q["topic"], o.Topics...)
	} else {
		q["match"] = append(q["match"], o.Topics...)
		q["match_urlpattern"] = append(q["match_urlpattern"], o.URLPatterns...)
	}
	u.RawQuery = q.Encode()
	sctx, cancel := context.WithCancel(ctx)
	s := &Subscription{
		c: c, opts: o, target: u.String(), ctx: sctx, cancel: cancel,
		events: make(chan Event, o.Buffer), done: make(chan struct{}),
	}
	if o.LastEventID != "" {
		s.lastID.Store(&o.LastEventID)
	}
	resp, err := s.connect(o.LastEventID)
	if err != nil {
		cancel()
		return nil, err
	}
	go s.run(resp)
	return s, nil
}

// Events returns the channel on which events are delivered. It is closed
// when the subscription ends; the events it buffers can still be read.
func (s *Subscription) Events() <-chan Event { return s.events }

// Err reports why the subscription ended, once Events is closed: nil
// after Close or the end of the context, the permanent error otherwise
// (a *HubError for a 4xx answer to a reconnection).
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// LastEventID returns the id of the last event delivered on Events, or
// the starting LastEventID if none was: the point to resume from. While
// the subscription runs it may lag by the event being handed over; once
// Events is closed it is exact.
func (s *Subscription) LastEventID() string {
	if p := s.lastID.Load(); p != nil {
		return *p
	}
	return ""
}

// Close ends the subscription and waits for its goroutine. It is safe to
// call more than once and after the subscription ended by itself.
func (s *Subscription) Close() {
	s.cancel()
	<-s.done
}

// connect makes one connection attempt, resuming from lastID.
func (s *Subscription) connect(lastID string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, s.target, nil)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if t := s.c.cfg.SubscriberToken; t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := s.c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, hubError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		_ = resp.Body.Close()
		return nil, &permanentError{fmt.Errorf("subscribe: the hub answered %q, not an event stream", resp.Header.Get("Content-Type"))}
	}
	return resp, nil
}

// permanentError ends a subscription instead of being retried.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// permanent reports whether a failed reconnection must end the
// subscription: a 4xx other than 429 will not get better by retrying, and
// neither will an answer that is not an event stream (as for EventSource).
func permanent(err error) bool {
	if he, ok := errors.AsType[*HubError](err); ok {
		switch {
		case he.Status == http.StatusTooManyRequests, he.Status >= 500:
			return false
		default: // 4xx, or a 2xx other than 200, or a redirect not followed
			return true
		}
	}
	_, ok := errors.AsType[*permanentError](err)
	return ok
}

// run is the subscription's goroutine: it reads resp, then reconnects
// until the subscription ends.
func (s *Subscription) run(resp *http.Response) {
	var err error
	defer func() {
		if s.ctx.Err() != nil {
			err = nil // ended by its owner, not by a failure
		}
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		s.cancel()
		close(s.events)
		close(s.done)
	}()
	requested := s.opts.LastEventID
	failures := 0
	for attempt := 1; ; attempt++ {
		var wait time.Duration // at least this long before the next attempt
		if resp != nil {
			start := time.Now()
			delivered, rerr := s.stream(resp, attempt, requested)
			if s.ctx.Err() != nil {
				return
			}
			if delivered > 0 || time.Since(start) >= stableAfter {
				failures = 0
			}
			s.c.log.Debug("stream ended", "err", rerr, "delivered", delivered)
		} else {
			if permanent(err) {
				s.c.log.Warn("subscription ended", "err", err)
				return
			}
			if he, ok := errors.AsType[*HubError](err); ok {
				wait = min(he.RetryAfter, s.c.cfg.MaxBackoff)
			}
			s.c.log.Debug("reconnection failed", "attempt", attempt, "err", err)
		}
		base := s.c.cfg.MinBackoff
		if s.hasRetry {
			base = s.retry
		}
		delay := max(backoff(base, s.c.cfg.MaxBackoff, failures, jitter), wait)
		failures++
		if !sleep(s.ctx, delay) {
			return
		}
		requested = s.LastEventID()
		resp, err = s.connect(requested)
		if err != nil && s.ctx.Err() != nil {
			return
		}
	}
}

// stream delivers resp's events until it ends, and reports how many it
// delivered.
func (s *Subscription) stream(resp *http.Response, attempt int, requested string) (int, error) {
	defer resp.Body.Close()
	info := ConnectInfo{Attempt: attempt, Requested: requested}
	if requested != "" {
		if s.c.cfg.Draft7 {
			info.ResumedFrom = resp.Header.Get("Last-Event-ID")
		} else if info.ResumedFrom = resp.Header.Get("Mercure-Last-Event-ID"); info.ResumedFrom == "" {
			info.ResumedFrom = resp.Header.Get("Last-Event-ID")
		}
		info.PossibleLoss = info.ResumedFrom != requested
	}
	if info.PossibleLoss {
		s.c.log.Warn("resumed elsewhere than asked: updates may be lost", "requested", requested, "resumed_from", info.ResumedFrom)
	} else {
		s.c.log.Debug("connected", "attempt", attempt, "requested", requested)
	}
	if s.opts.OnConnect != nil {
		s.opts.OnConnect(info)
	}
	r := sse.NewReader(resp.Body)
	delivered := 0
	for {
		ev, err := r.Next()
		s.applyRetry(r.Retry())
		if err != nil {
			return delivered, err
		}
		select {
		case s.events <- Event{ID: ev.ID, Type: ev.Type, Data: ev.Data}:
		case <-s.ctx.Done():
			return delivered, s.ctx.Err()
		}
		delivered++
		// An event without an id keeps the previous resume point: the
		// hub gives every update one, and losing the cursor would make
		// the next connection start live.
		if ev.ID != "" {
			id := ev.ID
			s.lastID.Store(&id)
		}
	}
}

// applyRetry takes the hub's retry field, which EventSource applies as
// soon as it is read, even when no event follows it.
func (s *Subscription) applyRetry(v string) {
	if v == "" {
		return
	}
	// At most an hour: a hint, not a way to park the client.
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		s.retry = time.Duration(min(ms, int64(time.Hour/time.Millisecond))) * time.Millisecond
		s.hasRetry = true
	}
}
