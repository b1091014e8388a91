package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Update is one publication.
type Update struct {
	// Topics are the update's topics, the canonical one first. At least
	// one is required.
	Topics []string
	// Data is the content of the update.
	Data string
	// ID is the update's id; "" lets the hub choose one.
	ID string
	// Type is the SSE event type; "" is the default "message".
	Type string
	// Retry is the reconnection delay the hub passes on to subscribers,
	// sent in milliseconds; 0 sends none.
	Retry time.Duration
	// Private restricts the update to subscribers authorized for it.
	Private bool
}

// form encodes u as the publish form body.
func (u *Update) form() string {
	v := url.Values{"topic": u.Topics, "data": {u.Data}}
	if u.ID != "" {
		v.Set("id", u.ID)
	}
	if u.Type != "" {
		v.Set("type", u.Type)
	}
	if u.Retry > 0 {
		v.Set("retry", strconv.FormatInt(max(u.Retry.Milliseconds(), 1), 10))
	}
	if u.Private {
		v.Set("private", "on")
	}
	return v.Encode()
}

// publishBackoffLimit bounds the delay between publish attempts: a
// publisher waits briefly for a hub that is restarting, not for one that
// is down (the breaker is for that).
const publishBackoffLimit = 2 * time.Second

// maxIDBytes bounds what is read of a publish answer, the update's id.
const maxIDBytes = 64 << 10

// errCallerGone tells the breaker that an attempt ended because the
// caller's context did, which says nothing about the hub.
var errCallerGone = errors.New("caller's context ended")

// Publish posts u to the hub and returns the id the hub gave it.
//
// A non-200 answer is returned as a *HubError; a failure while the circuit
// breaker is open as ErrCircuitOpen. Publish retries only where a retry
// cannot publish the update twice (see the package doc), at most
// Config.PublishRetries times, with a short backoff that respects ctx.
func (c *Client) Publish(ctx context.Context, u Update) (string, error) {
	if len(u.Topics) == 0 {
		return "", errors.New("publish: an update needs at least one topic")
	}
	if u.Retry < 0 {
		return "", errors.New("publish: negative retry")
	}
	body := u.form()
	limit := min(c.cfg.MaxBackoff, publishBackoffLimit)
	for attempt := 0; ; attempt++ {
		id, retry, err := c.publishOnce(ctx, body)
		if err == nil {
			return id, nil
		}
		if !retry || attempt >= c.cfg.PublishRetries || ctx.Err() != nil {
			return "", err
		}
		delay := backoff(c.cfg.MinBackoff, limit, attempt, jitter)
		if he, ok := errors.AsType[*HubError](err); ok && he.RetryAfter > 0 {
			if he.RetryAfter > limit {
				return "", err // the hub asks for more patience than a publish has
			}
			delay = max(delay, he.RetryAfter)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return "", err
		}
		c.log.Debug("publish retry", "attempt", attempt+1, "delay", delay, "err", err)
		if !sleep(ctx, delay) {
			return "", fmt.Errorf("publish: %w (last attempt: %v)", context.Cause(ctx), err)
		}
	}
}

// publishOnce makes one attempt through the breaker and reports whether a
// failure may be retried.
func (c *Client) publishOnce(ctx context.Context, body string) (string, bool, error) {
	var done func(error)
	if c.breaker != nil {
		var err error
		if done, err = c.breaker.Allow(); err != nil {
			return "", false, ErrCircuitOpen
		}
	}
	id, retry, err := c.post(ctx, body)
	if done != nil {
		if err != nil && ctx.Err() != nil {
			done(errCallerGone)
		} else {
			done(err)
		}
	}
	return id, retry, err
}

// post sends the form once.
func (c *Client) post(ctx context.Context, body string) (string, bool, error) {
	// writeFailed holds whether the request could not be written in full
	// on the last connection tried (net/http may try more than one).
	var writeFailed atomic.Bool
	trace := &httptrace.ClientTrace{
		GotConn:      func(httptrace.GotConnInfo) { writeFailed.Store(false) },
		WroteRequest: func(i httptrace.WroteRequestInfo) { writeFailed.Store(i.Err != nil) },
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, c.hub.String(), strings.NewReader(body))
	if err != nil {
		return "", false, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.cfg.PublisherToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.PublisherToken)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", ctx.Err() == nil && unsent(err, writeFailed.Load()), fmt.Errorf("publish: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		he := hubError(resp)
		// herald, like Mercure hubs generally, answers 503 when it did
		// not store the update (shutting down, storage unavailable).
		return "", he.Status == http.StatusServiceUnavailable, he
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxIDBytes))
	_ = resp.Body.Close()
	if err != nil {
		// The update is stored but its id was lost on the way: a retry
		// would store it again.
		return "", false, fmt.Errorf("publish: read the answer: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), false, nil
}

// unsent reports whether a transport error proves the hub did not get
// the whole request, so that sending it again cannot publish it twice.
func unsent(err error, writeFailed bool) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return false // unsent, but it will fail the same way again
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
		return true
	}
	if writeFailed {
		// A form body cut short cannot be parsed, let alone stored.
		return true
	}
	// net/http's errServerClosedIdle: the server closed the keep-alive
	// connection before the request was handed to it (net/http retries it
	// by itself only for idempotent requests). The error is unexported;
	// its text is what net/http documents for this race (issue 19943).
	return strings.Contains(err.Error(), "http: server closed idle connection")
}
