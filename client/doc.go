// Package client is a Go client for Mercure hubs, herald or any other:
// it publishes updates and holds subscriptions that reconnect and resume
// on their own, speaking draft-08 or the pre-standard draft-07.
//
// # Publishing
//
// [Client.Publish] posts one update over a reused keep-alive connection.
// It retries only where a retry cannot store the update twice:
//
//   - dial failures (DNS, connection refused during a hub restart): nothing
//     was sent;
//   - a request that net/http reports as not completely written (its
//     httptrace WroteRequest carried an error): a hub cannot act on a form
//     it did not fully receive;
//   - "http: server closed idle connection": the server closed the
//     keep-alive connection before our request was even handed to it, the
//     keep-alive race named in net/http's transport.go;
//   - an answer 503 Service Unavailable, which herald (and Mercure hubs in
//     general) send when the update was not stored.
//
// net/http retries requests on a broken reused connection by itself only
// when the method is idempotent (or nothing at all was written): a POST
// that was fully written and then met EOF instead of an answer is not
// retried by net/http, and not by this package either, because the hub may
// have stored the update before the connection died and a second POST
// would publish it twice. Nothing else is retried: not a 4xx (the request
// is wrong and will stay wrong), not another 5xx (a gateway may have
// forwarded it), not a response timeout. Retries are few (Config.PublishRetries)
// and their backoff is short and bounded; a Retry-After longer than that
// bound, or one that would outlive the context's deadline, ends the retries
// at once with the *HubError, which carries it.
//
// A circuit breaker (github.com/sony/gobreaker/v2: small, generic, with a
// two-step API that lets one attempt's outcome be classified after the
// fact) watches every attempt: transport errors and
// 5xx answers count as failures, 2xx and 4xx answers as successes (a 4xx is
// the caller's fault, proof that the hub is up), and attempts cut short by
// the caller's context count as neither. Once it opens, Publish fails at
// once with ErrCircuitOpen until the breaker lets a trial through.
//
// # Subscribing
//
// [Client.Subscribe] makes one connection attempt and returns its outcome:
// a *Subscription once the hub answered 200, or the error (a *HubError for
// any other status). From then on one goroutine, owned by the Subscription,
// reads the stream and hands events to [Subscription.Events]. When the
// stream ends (EOF, network error) it reconnects with exponential backoff
// and full jitter, sending in Last-Event-ID the id of the last event it
// delivered to the consumer, so nothing the hub still retains is lost.
// A 4xx (but 429) on a reconnection ends the subscription with a *HubError;
// 429, 5xx and network errors are retried until the context ends or Close
// is called.
//
// The resume point travels in the Last-Event-ID request header on every
// connection, the first included: both drafts require hubs to accept it
// and to prefer it over the query parameters (last_event_id, lastEventID)
// that exist for browsers, which cannot set headers.
//
// # Backpressure
//
// Events is delivered with a blocking send: a consumer that does not keep
// up stops the reading of the stream, TCP pushes back, and the hub (herald
// does) eventually drops the slow subscriber, whereupon the subscription
// reconnects and resumes from what it delivered. No event is dropped by
// the client.
package client
