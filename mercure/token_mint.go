package mercure

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-hub/herald/hub"
)

// MintOptions describes a token to sign with Mint.
type MintOptions struct {
	// Key signs the token; it must hold a secret or a private key.
	Key *Key
	// Alg is the signature algorithm; empty means the key's first.
	Alg string
	// Publish and Subscribe are the topics granted for each action. For a
	// draft-08 token a value is an exact topic, "urlpattern:PATTERN" for a
	// URL pattern, or "exact:TOPIC" to spell out a topic that begins with
	// "urlpattern:"; "*" grants every topic. For a legacy token the values
	// are draft-07 selectors, used as they are.
	Publish, Subscribe []string
	// Payload is attached to the subscribe grant (draft-08, where it must
	// be a JSON object) or is mercure.payload (draft-07). Optional.
	Payload json.RawMessage
	// TTL sets exp to Now()+TTL. Draft-08 tokens require it; zero gives a
	// legacy token without exp.
	TTL time.Duration
	// Issuer (iss and client_id) and Audience (aud, the hub's resource
	// identifier, also the base of relative URL patterns) are required for
	// draft-08 and optional for legacy tokens. Subject defaults to
	// "herald-cli" for draft-08.
	Issuer, Audience, Subject string
	// Legacy mints a draft-07 token: typ JWT and a mercure claim.
	Legacy bool
	// Admin adds a Mercure authorization detail with herald's admin
	// action (ActionAdmin): the admin API's grant. Draft-08 only; sign it
	// with the publisher key.
	Admin bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Mint signs a token for the `herald token` command, the token printed in
// development mode, and tests. A draft-08 token is an RFC 9068 access token
// (typ at+jwt; iss, exp, aud, sub, client_id, iat, jti) with one Mercure
// authorization detail per granted action.
func Mint(o MintOptions) (string, error) {
	if o.Key == nil || !o.Key.CanSign() {
		return "", errors.New("mint: key cannot sign (need a secret or a private key)")
	}
	alg := o.Alg
	if alg == "" {
		alg = o.Key.algs[0]
	}
	if !slices.Contains(o.Key.algs, alg) {
		return "", fmt.Errorf("mint: algorithm %q is not allowed for %s", alg, o.Key)
	}
	method := jwt.GetSigningMethod(alg)
	if method == nil {
		return "", fmt.Errorf("mint: unknown algorithm %q", alg)
	}
	if o.TTL < 0 {
		return "", errors.New("mint: negative ttl")
	}
	if o.Payload != nil && !json.Valid(o.Payload) {
		return "", errors.New("mint: payload is not valid JSON")
	}
	if o.Payload != nil && len(o.Subscribe) == 0 {
		return "", errors.New("mint: a payload needs a subscribe grant")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	t := now()

	var claims jwt.MapClaims
	var err error
	if o.Legacy {
		if o.Admin {
			return "", errors.New("mint: the admin grant is a draft-08 token's")
		}
		claims, err = legacyClaims(o, t)
	} else {
		claims, err = accessTokenClaims(o, t)
	}
	if err != nil {
		return "", err
	}
	tok := jwt.NewWithClaims(method, claims)
	if !o.Legacy {
		tok.Header["typ"] = "at+jwt"
	}
	s, err := tok.SignedString(o.Key.sign)
	if err != nil {
		return "", fmt.Errorf("mint: sign: %w", err)
	}
	return s, nil
}

func legacyClaims(o MintOptions, t time.Time) (jwt.MapClaims, error) {
	for _, s := range slices.Concat(o.Publish, o.Subscribe) {
		if _, err := hub.NewMatcher(hub.MatchSelector, s, o.Audience); err != nil {
			return nil, fmt.Errorf("mint: selector %q: %w", s, err)
		}
	}
	mercure := map[string]any{}
	if o.Publish != nil {
		mercure["publish"] = o.Publish
	}
	if o.Subscribe != nil {
		mercure["subscribe"] = o.Subscribe
	}
	if o.Payload != nil {
		mercure["payload"] = o.Payload
	}
	c := jwt.MapClaims{"mercure": mercure}
	if o.TTL > 0 {
		c["exp"] = t.Add(o.TTL).Unix()
	}
	for name, v := range map[string]string{"iss": o.Issuer, "aud": o.Audience, "sub": o.Subject} {
		if v != "" {
			c[name] = v
		}
	}
	return c, nil
}

func accessTokenClaims(o MintOptions, t time.Time) (jwt.MapClaims, error) {
	switch {
	case o.TTL == 0:
		return nil, errors.New("mint: draft-08 tokens need a ttl (exp is required)")
	case o.Issuer == "":
		return nil, errors.New("mint: draft-08 tokens need an issuer")
	case o.Audience == "":
		return nil, errors.New("mint: draft-08 tokens need an audience (the hub's resource identifier)")
	}
	sub := o.Subject
	if sub == "" {
		sub = "herald-cli"
	}
	jti := uuidV4()
	details := []map[string]any{}
	for _, grant := range []struct {
		action string
		values []string
	}{{"publish", o.Publish}, {"subscribe", o.Subscribe}} {
		if len(grant.values) == 0 {
			continue
		}
		topics, err := mintTopics(grant.values, o.Audience)
		if err != nil {
			return nil, err
		}
		d := map[string]any{"type": tokenDetailType, "actions": []string{grant.action}, "topics": topics}
		if grant.action == "subscribe" && o.Payload != nil {
			if !strings.HasPrefix(strings.TrimSpace(string(o.Payload)), "{") {
				return nil, errors.New("mint: draft-08 payload must be a JSON object")
			}
			d["payload"] = o.Payload
		}
		details = append(details, d)
	}
	if o.Admin {
		details = append(details, map[string]any{"type": tokenDetailType, "actions": []string{ActionAdmin}, "topics": []map[string]string{{"match": "*"}}})
	}
	return jwt.MapClaims{
		"iss":                   o.Issuer,
		"aud":                   o.Audience,
		"sub":                   sub,
		"client_id":             o.Issuer,
		"iat":                   t.Unix(),
		"exp":                   t.Add(o.TTL).Unix(),
		"jti":                   jti,
		"authorization_details": details,
	}, nil
}

// mintTopics turns command-line grant values into topic matcher objects,
// compiling each so that a typo fails here rather than at the hub.
func mintTopics(values []string, base string) ([]map[string]string, error) {
	out := make([]map[string]string, 0, len(values))
	for _, v := range values {
		kind := hub.MatchExact
		if p, ok := strings.CutPrefix(v, "urlpattern:"); ok {
			kind, v = hub.MatchURLPattern, p
		} else if p, ok := strings.CutPrefix(v, "exact:"); ok {
			v = p
		}
		if v == "" {
			return nil, errors.New("mint: empty topic matcher")
		}
		if _, err := hub.NewMatcher(kind, v, base); err != nil {
			return nil, fmt.Errorf("mint: matcher %q: %w", v, err)
		}
		t := map[string]string{"match": v}
		if kind == hub.MatchURLPattern {
			t["match_type"] = "urlpattern"
		}
		out = append(out, t)
	}
	return out, nil
}

// uuidV4 returns a random RFC 9562 version 4 UUID as a URN. crypto/rand
// never fails (Go 1.24+), so neither does this.
func uuidV4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10
	h := hex.EncodeToString(b[:])
	return "urn:uuid:" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
