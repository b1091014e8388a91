package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Defaults of Config's zero values.
const (
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultPublishRetries = 2
)

// Config configures a Client. Zero values mean the defaults.
type Config struct {
	// Hub is the hub's URL, e.g. http://localhost:3000/.well-known/mercure.
	// Required; http or https. Query parameters it carries are kept.
	Hub string
	// PublisherToken and SubscriberToken are sent as bearer tokens; ""
	// sends none.
	PublisherToken, SubscriberToken string
	// Draft7 speaks the pre-standard draft: subscriptions select with
	// topic=; the hub's answer to a resume is read from Last-Event-ID. The
	// default, draft-08, subscribes with match= and match_urlpattern= and
	// reads Mercure-Last-Event-ID.
	Draft7 bool
	// HTTPClient sends every request. Nil means a client over
	// NewTransport (HTTP/1.1 and HTTP/2, tuned keep-alive). Its Timeout
	// must be zero: it would cut subscription streams.
	HTTPClient *http.Client
	// MinBackoff and MaxBackoff bound the reconnection delay of
	// subscriptions (full jitter; defaults DefaultMinBackoff and
	// DefaultMaxBackoff). MinBackoff is also the first publish retry delay.
	MinBackoff, MaxBackoff time.Duration
	// PublishRetries is how many times Publish retries an attempt that
	// failed where a retry is safe (see the package doc). Zero means
	// DefaultPublishRetries; negative means never.
	PublishRetries int
	// Breaker tunes the publish circuit breaker; zero means defaults.
	Breaker BreakerSettings
	// Logger receives the client's logs (reconnections, breaker changes);
	// nil discards them.
	Logger *slog.Logger
}

// BreakerSettings tunes the circuit breaker around publishing. Zero values
// mean the defaults.
type BreakerSettings struct {
	// Disabled turns the breaker off: every Publish reaches the hub.
	Disabled bool
	// ConsecutiveFailures opens the breaker after that many failed publish
	// attempts in a row (transport errors and 5xx). Default 5.
	ConsecutiveFailures uint32
	// OpenTimeout is how long the breaker stays open, failing fast, before
	// it lets trial publishes through. Default 10s.
	OpenTimeout time.Duration
	// HalfOpenRequests is how many trial publishes may run while half
	// open; that many successes close the breaker. Default 1.
	HalfOpenRequests uint32
	// OnStateChange, when set, is called on every transition with the
	// state names "closed", "half-open" and "open". It runs under the
	// breaker's lock: it must not publish.
	OnStateChange func(from, to string)
}

// ErrCircuitOpen is returned by Publish, without contacting the hub, while
// the circuit breaker is open (or half open with its trials under way).
var ErrCircuitOpen = errors.New("client: publish circuit breaker is open")

// HubError is a hub's answer other than 200.
type HubError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the start of the answer's body, trimmed.
	Message string
	// Challenge is the WWW-Authenticate header of a 401 or 403, if any.
	Challenge string
	// RetryAfter is the delay asked by a Retry-After header (429, 503),
	// zero when there was none.
	RetryAfter time.Duration
}

func (e *HubError) Error() string {
	s := "hub answered " + strconv.Itoa(e.Status)
	if t := http.StatusText(e.Status); t != "" {
		s += " " + t
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// maxMessage bounds what is read of an error answer's body.
const maxMessage = 4 << 10

// hubError reads and closes resp's body and describes the answer.
func hubError(resp *http.Response) *HubError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxMessage))
	_ = resp.Body.Close()
	return &HubError{
		Status:     resp.StatusCode,
		Message:    strings.TrimSpace(string(b)),
		Challenge:  resp.Header.Get("WWW-Authenticate"),
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
}

// retryAfter parses a Retry-After value: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Client publishes to and subscribes at one hub. It is safe for concurrent
// use; its connections are shared by every call.
type Client struct {
	cfg     Config
	hub     *url.URL
	http    *http.Client
	log     *slog.Logger
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.Hub)
	if err != nil {
		return nil, fmt.Errorf("client: hub url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: hub url %q is not an absolute http or https URL", cfg.Hub)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("client: MaxBackoff %v is below MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}
	switch {
	case cfg.PublishRetries == 0:
		cfg.PublishRetries = DefaultPublishRetries
	case cfg.PublishRetries < 0:
		cfg.PublishRetries = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: NewTransport()}
	}
	if hc.Timeout != 0 {
		return nil, errors.New("client: HTTPClient.Timeout must be zero: it would cut subscription streams (use contexts)")
	}
	c := &Client{cfg: cfg, hub: u, http: hc, log: cfg.Logger.WithGroup("client")}
	if !cfg.Breaker.Disabled {
		c.breaker = newBreaker(cfg.Breaker, c.log)
	}
	return c, nil
}

// CloseIdleConnections closes the idle keep-alive connections of the
// client's transport. Open subscriptions are not affected.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// NewTransport returns the transport a Client uses when Config.HTTPClient
// is nil, for callers who need to adjust it (TLS roots, proxy) and pass
// &http.Client{Transport: t}.
//
// It keeps many idle connections per host, so that concurrent publishers
// reuse them instead of dialing; it negotiates HTTP/2 over TLS
// (ForceAttemptHTTP2, needed once DialContext is set); dial, TLS handshake
// and response headers have timeouts, response bodies have none, since a
// subscription stream lasts as long as it is wanted. Dead peers are found
// by TCP keep-alive probes (HTTP/1.1) and by HTTP/2 PING after a read-idle
// period.
func NewTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
}

func newBreaker(s BreakerSettings, log *slog.Logger) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = 5
	}
	if s.OpenTimeout <= 0 {
		s.OpenTimeout = 10 * time.Second
	}
	if s.HalfOpenRequests == 0 {
		s.HalfOpenRequests = 1
	}
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "publish",
		MaxRequests: s.HalfOpenRequests,
		Timeout:     s.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= s.ConsecutiveFailures },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			log.Warn("publish circuit breaker", "from", from.String(), "to", to.String())
			if s.OnStateChange != nil {
				s.OnStateChange(from.String(), to.String())
			}
		},
		// A 4xx proves the hub is up: the fault is the caller's.
		IsSuccessful: func(err error) bool {
			var he *HubError
			return err == nil || errors.As(err, &he) && he.Status < 500
		},
		// The caller's own cancellation says nothing about the hub.
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
		},
	})
}

// backoff returns the delay before the next attempt after failures
// consecutive failed ones (0 for the first retry): uniform ("full jitter")
// in [base, ceiling], where the ceiling starts at twice base and doubles
// with every failure up to limit. The delay never goes below base, so a
// hub's retry hint is honoured, and never above max(limit, base), so it
// stays bounded. randN returns a uniform value in [0, n).
func backoff(base, limit time.Duration, failures int, randN func(n int64) int64) time.Duration {
	if base <= 0 {
		base = time.Millisecond
	}
	ceiling := max(limit, base)
	step := base
	for i := 0; i <= failures && step < ceiling; i++ {
		if step > ceiling/2 {
			step = ceiling
		} else {
			step *= 2
		}
	}
	if step <= base {
		return base
	}
	return base + time.Duration(randN(int64(step-base)+1))
}

// jitter draws the random part of a backoff.
func jitter(n int64) int64 { return rand.Int64N(n) }

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
