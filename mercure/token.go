package mercure

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-hub/herald/hub"
)

// ActionAdmin is the authorization detail action that grants herald's
// admin API, in a publisher token.
const ActionAdmin = "admin"

// Action is what a token may allow.
type Action uint8

const (
	// ActionPublish is the right to publish updates.
	ActionPublish Action = iota + 1
	// ActionSubscribe is the right to receive private updates.
	ActionSubscribe
)

// String returns the draft-08 action name.
func (a Action) String() string {
	switch a {
	case ActionPublish:
		return "publish"
	case ActionSubscribe:
		return "subscribe"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Token limits.
const (
	// MaxTokenSize bounds a presented token, in bytes. It keeps header and
	// claims parsing, and the authorization details in them, bounded.
	MaxTokenSize = 16 << 10
	// DefaultMaxDetails is the default TokenConfig.MaxDetails.
	DefaultMaxDetails = 64
	// DefaultMaxTopicsPerDetail is the default TokenConfig.MaxTopicsPerDetail.
	DefaultMaxTopicsPerDetail = 256
)

// tokenDetailType identifies a Mercure authorization detail (draft-08),
// compared byte for byte.
const tokenDetailType = "https://mercure.rocks/authorization-detail"

// TokenConfig configures a Validator. Zero values of the limits mean the
// defaults.
type TokenConfig struct {
	// PublisherKey verifies publishers' tokens, SubscriberKey subscribers'.
	// A nil key means the role has no tokens: every token presented for it
	// is invalid (subscribers are anonymous only, publishing is refused).
	PublisherKey, SubscriberKey *Key
	// Issuer is the trusted iss of draft-08 tokens, the identifier the keys
	// are bound to. Required when Draft8 is set.
	Issuer string
	// Audience is the hub's resource identifier (its public URL): draft-08
	// tokens must name it in aud. Required when Draft8 is set.
	Audience string
	// Draft7 accepts pre-standard tokens (typ other than at+jwt, mercure
	// claim); Draft8 accepts at+jwt tokens with authorization_details.
	Draft7, Draft8 bool
	// Base is the hub URL, against which relative URL patterns and
	// selectors in grants resolve.
	Base string
	// MaxDetails bounds the Mercure authorization details of a token and
	// MaxTopicsPerDetail the matchers in each of them (and in each draft-07
	// publish or subscribe list). Tokens over a limit are invalid.
	MaxDetails, MaxTopicsPerDetail int
	// Leeway is the clock skew tolerated on exp and nbf. Zero, the default,
	// tolerates none: the hub closes a subscription at exp exactly, which is
	// what draft-08 asks ("no later than exp"). Issuers should not mint
	// tokens that are valid only from the instant they are issued.
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Matchers is the table grants get their compiled matchers from, so
	// that tokens naming the same pattern share one copy; give it the
	// hub's (hub.Hub.Matchers) to share with subscriptions as well. Nil
	// gives the validator a table of its own.
	Matchers *hub.Matchers
	// CacheBytes bounds the memory of the cache of validated tokens: the
	// tokens, their grants and the compiled matchers those hold (each
	// counted once however many grants hold it). Default 16 MiB;
	// negative turns the cache off.
	CacheBytes int
}

// Validator validates access tokens of both drafts and turns them into
// Grants. It is immutable and safe for concurrent use.
//
// JWS parsing and signature verification use github.com/golang-jwt/jwt/v5
// rather than go-jose: it is the de-facto Go JWT library, it takes an
// explicit algorithm allowlist (jwt.WithValidMethods) so that the token's
// alg never chooses the algorithm, and every signing method checks the Go
// type of its key, so an RSA or EC public key can never be used as an HMAC
// secret (algorithm confusion). Claims are decoded here, with exact key
// names, after the signature is verified.
type Validator struct {
	c         TokenConfig
	publisher *jwt.Parser
	subscribe *jwt.Parser
	cache     grantCache
}

// grantCache remembers the grants of tokens that validated, keyed by the
// token's exact bytes, until the token's exp. Publishers send the same
// token with every request and subscribers with every reconnection, and a
// full validation (signature, JSON, matcher compilation) costs about 17 µs
// and 150 allocations. Only successes are cached; grants are immutable.
//
// It is bounded in entries and in bytes: a token may be 16 KiB and hold a
// few hundred compiled patterns of several KB each, so a bound on entries
// alone would let a few thousand tokens hold gigabytes. Matchers come from
// a shared table and count once, however many cached grants hold them; an
// arbitrary entry makes room.
type grantCache struct {
	mu       sync.Mutex
	m        map[grantKey]*cachedGrant
	table    *hub.Matchers
	held     map[*hub.Matcher]int // matchers of cached grants, with how many grants hold each
	bytes    int
	maxBytes int // negative: cache nothing
}

type grantKey struct {
	raw    string
	action Action
}

type cachedGrant struct {
	g        *Grant
	notAfter time.Time      // zero: the token has no exp
	own      int            // bytes of the entry but its matchers
	ms       []*hub.Matcher // its distinct matchers, acquired in table
}

const (
	// grantCacheSize bounds the entries of the cache.
	grantCacheSize = 4096
	// DefaultTokenCacheBytes is the default TokenConfig.CacheBytes.
	DefaultTokenCacheBytes = 16 << 20
	// grantOverhead estimates a cached grant's fixed cost: the map entry,
	// the Grant and the cache's bookkeeping.
	grantOverhead = 400
)

func (c *grantCache) init(table *hub.Matchers, maxBytes int) {
	c.m = make(map[grantKey]*cachedGrant)
	c.held = make(map[*hub.Matcher]int)
	c.table, c.maxBytes = table, maxBytes
}

func (c *grantCache) get(k grantKey, now time.Time) *Grant {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil
	}
	if !e.notAfter.IsZero() && !now.Before(e.notAfter) {
		c.drop(k, e)
		return nil
	}
	return e.g
}

// put caches g, which has not been handed out yet: its matchers are
// replaced with the table's shared copies. It returns the grant to use,
// the one already cached when another validation of the same token won.
func (c *grantCache) put(k grantKey, g *Grant) *Grant {
	if c.maxBytes < 0 {
		return g
	}
	ms := grantMatchers(g)
	own := grantSize(k, g)
	need := own
	for _, m := range ms {
		need += m.Size()
	}
	if need > c.maxBytes {
		return g // it would not fit alone
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[k]; e != nil {
		return e.g
	}
	// The token may be a slice of a whole Cookie header or query string:
	// keep a copy of its own, or the entry would hold all of that while
	// counting only the token.
	k.raw = strings.Clone(k.raw)
	shared := make(map[*hub.Matcher]*hub.Matcher, len(ms))
	for i, m := range ms {
		sm := c.table.Acquire(m)
		shared[m], ms[i] = sm, sm
		if c.held[sm]++; c.held[sm] == 1 {
			c.bytes += sm.Size()
		}
	}
	swapMatchers(g, shared)
	e := &cachedGrant{g: g, notAfter: g.Expires, own: own, ms: ms}
	c.m[k] = e
	c.bytes += own
	// Make room, never dropping the new entry: its matchers are held.
	for c.bytes > c.maxBytes || len(c.m) > grantCacheSize {
		for old, oe := range c.m {
			if oe != e {
				c.drop(old, oe)
				break
			}
		}
	}
	return g
}

// drop removes an entry and gives back its matchers. Call with mu held.
func (c *grantCache) drop(k grantKey, e *cachedGrant) {
	delete(c.m, k)
	c.bytes -= e.own
	for _, m := range e.ms {
		if c.held[m]--; c.held[m] == 0 {
			delete(c.held, m)
			c.bytes -= m.Size()
		}
		c.table.Release(m)
	}
}

// grantMatchers returns g's distinct matchers.
func grantMatchers(g *Grant) []*hub.Matcher {
	seen := make(map[*hub.Matcher]bool)
	var ms []*hub.Matcher
	for _, list := range [][]*hub.Matcher{g.Publish, g.Subscribe} {
		for _, m := range list {
			if !seen[m] {
				seen[m] = true
				ms = append(ms, m)
			}
		}
	}
	return ms
}

// swapMatchers points g at the shared copies of its matchers.
func swapMatchers(g *Grant, shared map[*hub.Matcher]*hub.Matcher) {
	lists := [][]*hub.Matcher{g.Publish, g.Subscribe}
	for _, d := range g.details {
		lists = append(lists, d.topics)
	}
	for _, list := range lists {
		for i, m := range list {
			if sm, ok := shared[m]; ok {
				list[i] = sm
			}
		}
	}
}

// grantSize estimates the bytes a cached grant holds beside its matchers:
// the token (the key), the payloads and the slices.
func grantSize(k grantKey, g *Grant) int {
	n := grantOverhead + len(k.raw) + len(g.Subject) + len(g.Issuer) + len(g.payload)
	n += 8 * (len(g.Publish) + len(g.Subscribe))
	for _, d := range g.details {
		n += 48 + 8*len(d.topics) + len(d.payload)
	}
	return n
}

// CachedTokens returns the number of validated tokens cached and an
// estimate of the bytes they hold.
func (v *Validator) CachedTokens() (n, bytes int) {
	v.cache.mu.Lock()
	defer v.cache.mu.Unlock()
	return len(v.cache.m), v.cache.bytes
}

// NewValidator checks c and fills in its defaults.
func NewValidator(c TokenConfig) (*Validator, error) {
	switch {
	case !c.Draft7 && !c.Draft8:
		return nil, errors.New("tokens: no protocol draft enabled")
	case c.Draft8 && c.Issuer == "":
		return nil, errors.New("tokens: draft-08 needs an issuer")
	case c.Draft8 && c.Audience == "":
		return nil, errors.New("tokens: draft-08 needs an audience (the hub's resource identifier)")
	case c.MaxDetails < 0 || c.MaxTopicsPerDetail < 0:
		return nil, errors.New("tokens: negative limit")
	case c.Leeway < 0:
		return nil, errors.New("tokens: negative leeway")
	}
	if c.MaxDetails == 0 {
		c.MaxDetails = DefaultMaxDetails
	}
	if c.MaxTopicsPerDetail == 0 {
		c.MaxTopicsPerDetail = DefaultMaxTopicsPerDetail
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Matchers == nil {
		c.Matchers = hub.NewMatchers()
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = DefaultTokenCacheBytes
	}
	v := &Validator{c: c}
	v.cache.init(c.Matchers, c.CacheBytes)
	v.publisher = tokenParser(c.PublisherKey)
	v.subscribe = tokenParser(c.SubscriberKey)
	return v, nil
}

func tokenParser(k *Key) *jwt.Parser {
	if k == nil {
		return nil
	}
	// Claims are checked by Validate once the draft is known, so the
	// library's validation is off; strict decoding refuses non-canonical
	// base64, so a token has one encoding.
	return jwt.NewParser(
		jwt.WithValidMethods(k.Algorithms()),
		jwt.WithoutClaimsValidation(),
		jwt.WithStrictDecoding(),
	)
}

// TokenError is a presented-token failure, reported in a WWW-Authenticate:
// Bearer challenge (RFC 6750). Description is a short lower-case message
// made only of printable ASCII without quotes or backslashes, never of token
// content, so it can be logged or sent as error_description as is.
type TokenError struct {
	// Code is "invalid_token" (Status 401) or "invalid_request" (Status 400).
	Code        string
	Description string
	Status      int
}

func (e *TokenError) Error() string { return e.Code + ": " + e.Description }

func invalidToken(desc string) *TokenError {
	return &TokenError{Code: "invalid_token", Description: desc, Status: http.StatusUnauthorized}
}

// Grant is what a validated token allows. It is immutable once returned.
type Grant struct {
	// Legacy is set for a draft-07 token.
	Legacy bool
	// Publish and Subscribe hold the matchers the token grants each action
	// on: exact and URL pattern matchers for draft-08, selectors for draft-07.
	Publish, Subscribe []*hub.Matcher
	// Expires is exp plus the configured leeway: when the hub stops
	// accepting the token. It is zero for a draft-07 token without exp.
	Expires time.Time
	// Subject and Issuer are the token's sub and iss, possibly empty.
	Subject, Issuer string
	// IssuedAt is the token's iat, zero when it has none.
	IssuedAt time.Time
	// Admin is set for a draft-08 token whose Mercure authorization
	// detail grants herald's "admin" action: the admin API's grant. Only
	// publisher tokens carry it (Validate with ActionPublish).
	Admin bool

	// details holds the draft-08 subscribe details, in token order, for
	// payload selection; payload is the draft-07 mercure.payload.
	details []subscribeDetail
	payload json.RawMessage
}

type subscribeDetail struct {
	topics  []*hub.Matcher
	payload json.RawMessage
}

// CanPublish reports whether every topic is matched by some publish matcher
// (both drafts: an update is refused whole if one topic is not granted).
// It is false for no topics and for a nil Grant.
func (g *Grant) CanPublish(topics []string) bool {
	if g == nil || len(topics) == 0 {
		return false
	}
	for _, t := range topics {
		if !matchesAny(g.Publish, t) {
			return false
		}
	}
	return true
}

// CanRead reports whether a private update with these topics (canonical
// and alternate) may be delivered: some topic matched by some subscribe
// matcher. It is false for a nil Grant.
func (g *Grant) CanRead(topics []string) bool {
	if g == nil {
		return false
	}
	for _, t := range topics {
		if matchesAny(g.Subscribe, t) {
			return true
		}
	}
	return false
}

// Payload returns the payload attached to a subscription whose own matcher
// string is matcher. Draft-08: the payload of the first subscribe detail
// whose topics match the matcher string read as a topic; if that detail has
// no payload there is none (the first matching detail wins). Draft-07: the
// mercure.payload claim, whatever the matcher.
func (g *Grant) Payload(matcher string) (json.RawMessage, bool) {
	if g == nil {
		return nil, false
	}
	if g.Legacy {
		return g.payload, g.payload != nil
	}
	for _, d := range g.details {
		if matchesAny(d.topics, matcher) {
			return d.payload, d.payload != nil
		}
	}
	return nil, false
}

func matchesAny(ms []*hub.Matcher, topic string) bool {
	for _, m := range ms {
		if m.Match(topic) {
			return true
		}
	}
	return false
}

// Validate checks a presented token for action and returns what it grants.
// Every failure is a *TokenError; all of them are invalid_token (401), since
// the token, not the request, is at fault.
//
// Draft-08 tokens (typ at+jwt) must be signed by the role's key with an
// allowed algorithm and carry exp, iss equal to Issuer and aud naming
// Audience; nbf is enforced when present. Their authorization_details are
// all-or-nothing: one malformed Mercure detail invalidates the token.
// Draft-07 tokens (any other typ) are checked as the 0.x reference hub did:
// the signature, exp and nbf when present, and the mercure claim.
func (v *Validator) Validate(raw string, action Action) (*Grant, error) {
	k := grantKey{raw, action}
	if g := v.cache.get(k, v.c.Now()); g != nil {
		return g, nil
	}
	g, terr := v.validate(raw, action)
	if terr != nil {
		return nil, terr
	}
	return v.cache.put(k, g), nil
}

func (v *Validator) validate(raw string, action Action) (*Grant, *TokenError) {
	var key *Key
	var parser *jwt.Parser
	switch action {
	case ActionPublish:
		key, parser = v.c.PublisherKey, v.publisher
	case ActionSubscribe:
		key, parser = v.c.SubscriberKey, v.subscribe
	default:
		return nil, invalidToken("unknown action")
	}
	if parser == nil {
		return nil, invalidToken(action.String() + " tokens are not accepted")
	}
	if len(raw) > MaxTokenSize {
		return nil, invalidToken("token too large")
	}

	var legacy bool
	var headerErr *TokenError
	claims := &tokenClaims{}
	// The key function sees the decoded header before the signature is
	// checked. It reads alg (already held to the allowlist by the parser),
	// typ and crit, and nothing else: jwk, jku, x5u and kid never choose
	// the key, the role does.
	_, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515 section 4.1.11: no extension is understood here.
			headerErr = invalidToken("unsupported critical header parameter")
			return nil, headerErr
		}
		atJWT, ok := isAccessTokenType(t.Header)
		switch {
		case !ok:
			headerErr = invalidToken("token typ must be a string")
		case atJWT && !v.c.Draft8:
			headerErr = invalidToken("at+jwt tokens are not accepted")
		case !atJWT && !v.c.Draft7:
			headerErr = invalidToken("token typ must be at+jwt")
		}
		if headerErr != nil {
			return nil, headerErr
		}
		legacy = !atJWT
		return key.verify, nil
	})
	switch {
	case headerErr != nil:
		return nil, headerErr
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, invalidToken("malformed token")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && !signedWithAllowedAlg(raw, key):
		return nil, invalidToken("unsupported signing algorithm")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, invalidToken("invalid signature")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// Unknown or missing alg: the only ways here once a key is set.
		return nil, invalidToken("unsupported signing algorithm")
	default:
		return nil, invalidToken("invalid token")
	}
	if !claims.decoded {
		return nil, invalidToken("malformed token: claims are not a json object")
	}

	g := &Grant{Legacy: legacy, Subject: claims.Subject, Issuer: claims.Issuer}
	if claims.IssuedAt != nil {
		g.IssuedAt = claims.IssuedAt.Time
	}
	if terr := v.checkTimes(claims, g, !legacy); terr != nil {
		return nil, terr
	}
	if legacy {
		if terr := v.legacyGrant(claims.mercure, g); terr != nil {
			return nil, terr
		}
		return g, nil
	}
	switch {
	case claims.Issuer == "":
		return nil, invalidToken("token has no iss")
	case claims.Issuer != v.c.Issuer:
		return nil, invalidToken("token issuer is not trusted")
	case !slices.Contains(claims.Audience, v.c.Audience):
		return nil, invalidToken("token audience does not name this hub")
	}
	if terr := v.detailsGrant(claims.details, g); terr != nil {
		return nil, terr
	}
	return g, nil
}

// isAccessTokenType reports whether the typ header names an RFC 9068 access
// token: "at+jwt" or "application/at+jwt", case-insensitively (RFC 7515
// section 4.1.9). ok is false when typ is present but not a string.
func isAccessTokenType(h map[string]any) (atJWT, ok bool) {
	raw, present := h["typ"]
	if !present {
		return false, true
	}
	typ, ok := raw.(string)
	if !ok {
		return false, false
	}
	if len(typ) > len("application/") && strings.EqualFold(typ[:len("application/")], "application/") {
		typ = typ[len("application/"):]
	}
	return strings.EqualFold(typ, "at+jwt"), true
}

// signedWithAllowedAlg tells a signature that does not verify from an alg
// the parser refused, which the library reports alike.
func signedWithAllowedAlg(raw string, k *Key) bool {
	t, _, err := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
	if err != nil || t == nil || t.Method == nil {
		return false
	}
	return slices.Contains(k.algs, t.Method.Alg())
}

func (v *Validator) checkTimes(c *tokenClaims, g *Grant, needExp bool) *TokenError {
	now := v.c.Now()
	if c.ExpiresAt == nil {
		if needExp {
			return invalidToken("token has no exp")
		}
	} else {
		g.Expires = c.ExpiresAt.Add(v.c.Leeway)
		if !now.Before(g.Expires) {
			return invalidToken("token expired")
		}
	}
	if c.NotBefore != nil && now.Add(v.c.Leeway).Before(c.NotBefore.Time) {
		return invalidToken("token not valid yet")
	}
	return nil
}

// detailsGrant reads draft-08 authorization_details into g. Absent details
// grant nothing; any malformed Mercure detail rejects the whole token, since
// acting on the others would silently change what the token allows.
func (v *Validator) detailsGrant(raw json.RawMessage, g *Grant) *TokenError {
	if raw == nil {
		return nil
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil || entries == nil {
		return invalidToken("malformed authorization_details: not an array")
	}
	n := 0
	for i, e := range entries {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(e, &obj); err != nil || obj == nil {
			return detailError(i, "not an object")
		}
		var typ string
		if json.Unmarshal(obj["type"], &typ) != nil || typ != tokenDetailType {
			continue // another API's detail: not ours to judge
		}
		if n++; n > v.c.MaxDetails {
			return invalidToken(fmt.Sprintf("too many mercure authorization details (max %d)", v.c.MaxDetails))
		}
		if terr := v.mercureDetail(i, obj, g); terr != nil {
			return terr
		}
	}
	return nil
}

func detailError(i int, msg string) *TokenError {
	return invalidToken(fmt.Sprintf("malformed authorization_details: entry %d: %s", i, msg))
}

func (v *Validator) mercureDetail(i int, obj map[string]json.RawMessage, g *Grant) *TokenError {
	var actions []json.RawMessage
	if err := json.Unmarshal(obj["actions"], &actions); err != nil || len(actions) == 0 {
		return detailError(i, "actions must be a non-empty array")
	}
	var publish, subscribe, admin bool
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) != nil {
			return detailError(i, "actions must be strings")
		}
		// Unknown actions grant nothing and are no error, so that issuers
		// can name actions of later specifications.
		switch s {
		case "publish":
			publish = true
		case "subscribe":
			subscribe = true
		case ActionAdmin:
			admin = true
		}
	}

	var topics []json.RawMessage
	if err := json.Unmarshal(obj["topics"], &topics); err != nil || len(topics) == 0 {
		return detailError(i, "topics must be a non-empty array")
	}
	if len(topics) > v.c.MaxTopicsPerDetail {
		return detailError(i, fmt.Sprintf("too many topics (max %d)", v.c.MaxTopicsPerDetail))
	}
	matchers := make([]*hub.Matcher, 0, len(topics))
	for _, t := range topics {
		m, msg := v.topicMatcher(t)
		if m == nil {
			return detailError(i, msg)
		}
		matchers = append(matchers, m)
	}

	var payload json.RawMessage
	if p, ok := obj["payload"]; ok {
		var probe map[string]json.RawMessage
		if json.Unmarshal(p, &probe) != nil || probe == nil {
			return detailError(i, "payload must be an object")
		}
		payload = p
	}

	if publish {
		g.Publish = append(g.Publish, matchers...)
	}
	if admin {
		g.Admin = true
	}
	if subscribe {
		g.Subscribe = append(g.Subscribe, matchers...)
		g.details = append(g.details, subscribeDetail{topics: matchers, payload: payload})
	}
	return nil
}

// topicMatcher compiles one topic matcher object, or says what is wrong.
func (v *Validator) topicMatcher(raw json.RawMessage) (*hub.Matcher, string) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, "topic matcher is not an object"
	}
	var match string
	if err := json.Unmarshal(obj["match"], &match); err != nil || match == "" {
		return nil, "match must be a non-empty string"
	}
	kind := hub.MatchExact
	if rt, ok := obj["match_type"]; ok {
		var mt string
		if json.Unmarshal(rt, &mt) != nil {
			return nil, "match_type must be a string"
		}
		switch mt {
		case "exact":
		case "urlpattern":
			kind = hub.MatchURLPattern
		default:
			// A grant that cannot be evaluated must not be skipped.
			return nil, "unsupported match_type"
		}
	}
	m, err := v.c.Matchers.Get(kind, match, v.c.Base)
	if err != nil {
		return nil, "invalid " + kind.String() + " matcher"
	}
	return m, ""
}

// legacyGrant reads the draft-07 mercure claim into g. No claim (or null)
// grants nothing, as with the 0.x reference hub.
func (v *Validator) legacyGrant(raw json.RawMessage, g *Grant) *TokenError {
	if raw == nil || string(raw) == "null" {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return invalidToken("malformed mercure claim: not an object")
	}
	var terr *TokenError
	if g.Publish, terr = v.selectors(obj["publish"], "publish"); terr != nil {
		return terr
	}
	if g.Subscribe, terr = v.selectors(obj["subscribe"], "subscribe"); terr != nil {
		return terr
	}
	if p, ok := obj["payload"]; ok && string(p) != "null" {
		g.payload = p
	}
	return nil
}

func (v *Validator) selectors(raw json.RawMessage, name string) ([]*hub.Matcher, *TokenError) {
	if raw == nil {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalidToken("malformed mercure claim: " + name + " must be an array of strings")
	}
	if len(list) > v.c.MaxTopicsPerDetail {
		return nil, invalidToken(fmt.Sprintf("malformed mercure claim: too many %s selectors (max %d)", name, v.c.MaxTopicsPerDetail))
	}
	ms := make([]*hub.Matcher, 0, len(list))
	for _, s := range list {
		m, err := v.c.Matchers.Get(hub.MatchSelector, s, v.c.Base)
		if err != nil {
			return nil, invalidToken("malformed mercure claim: invalid " + name + " selector")
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// tokenClaims decodes the claims of both drafts. encoding/json matches
// struct field names case-insensitively, so the claims are read from a map
// instead: "EXP" is not "exp" and "Mercure" is not "mercure". Only the
// registered claims are decoded before the signature is verified; the
// grants are kept raw until then.
type tokenClaims struct {
	jwt.RegisteredClaims
	details json.RawMessage // authorization_details
	mercure json.RawMessage
	decoded bool
}

func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if m == nil {
		return errors.New("claims are null")
	}
	for name, dst := range map[string]any{
		"iss": &c.Issuer,
		"sub": &c.Subject,
		"aud": &c.Audience,
		"exp": &c.ExpiresAt,
		"nbf": &c.NotBefore,
		"iat": &c.IssuedAt,
		"jti": &c.ID,
	} {
		if r, ok := m[name]; ok {
			if err := json.Unmarshal(r, dst); err != nil {
				return fmt.Errorf("claim %s: %w", name, err)
			}
		}
	}
	c.details = m["authorization_details"]
	c.mercure = m["mercure"]
	c.decoded = true
	return nil
}
