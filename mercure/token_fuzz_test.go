package mercure

import (
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"testing"
)

var tkSafeDescription = regexp.MustCompile(`^[\x20\x21\x23-\x5b\x5d-\x7e]+$`)

// tkCheckOutcome asserts the contract of Validate on any input: a grant, or
// a *TokenError that a challenge can carry.
func tkCheckOutcome(t *testing.T, g *Grant, err error) {
	t.Helper()
	if err != nil {
		var te *TokenError
		if !errors.As(err, &te) {
			t.Fatalf("error %v is a %T, not a *TokenError", err, err)
		}
		switch {
		case te.Status == 401 && te.Code == "invalid_token":
		case te.Status == 400 && te.Code == "invalid_request":
		default:
			t.Fatalf("error %+v: want invalid_token 401 or invalid_request 400", te)
		}
		if !tkSafeDescription.MatchString(te.Description) {
			t.Fatalf("description %q does not fit a quoted error_description", te.Description)
		}
		if g != nil {
			t.Fatalf("grant %+v with error %v", g, err)
		}
		return
	}
	if g == nil {
		t.Fatal("nil grant without error")
	}
	if !g.Legacy && !g.Expires.After(tkNow) {
		t.Fatalf("draft-08 grant expiring at %v accepted at %v", g.Expires, tkNow)
	}
	topics := []string{"https://example.com/books/1", "*", "", "urn:x"}
	g.CanPublish(topics)
	g.CanRead(topics)
	for _, m := range topics {
		g.Payload(m)
	}
}

func tkFuzzValidator(f *testing.F) (*Validator, *Key, *Key) {
	p := tkKeyMaterial()
	pub, sub := tkKey(f, p.secret), tkKey(f, p.ecPriv)
	return tkValidator(f, pub, sub, func(c *TokenConfig) { c.MaxDetails = 8; c.MaxTopicsPerDetail = 8 }), pub, sub
}

// FuzzValidate feeds arbitrary strings to Validate as both roles.
func FuzzValidate(f *testing.F) {
	v, pub, sub := tkFuzzValidator(f)
	at := map[string]any{"alg": "HS256", "typ": "at+jwt"}
	seeds := []string{
		tkSign(f, pub, at, tkClaims(f, nil)),
		tkSign(f, sub, map[string]any{"alg": "ES256", "typ": "application/at+jwt"}, tkClaims(f, nil)),
		tkSign(f, pub, map[string]any{"alg": "HS256"}, `{"mercure":{"publish":["*"],"subscribe":["https://example.com/{id}"],"payload":{"a":1}}}`),
		tkSign(f, pub, map[string]any{"alg": "HS256", "typ": "JWT"}, `{"exp":1,"mercure":{"publish":"x"}}`),
		tkSign(f, pub, at, tkClaims(f, map[string]any{"exp": nil})),
		tkSign(f, nil, map[string]any{"alg": "none", "typ": "at+jwt"}, tkClaims(f, nil)),
		tkSign(f, pub, map[string]any{"alg": "HS256", "typ": "at+jwt", "crit": []string{"b64"}, "b64": false}, tkClaims(f, nil)),
		tkForge(`{"alg":"RS256","typ":"at+jwt"}`),
		tkForge(`{"alg":"ES256","typ":7}`),
		tkForge(`null`),
		"", ".", "..", "...", "a.b.c", "eyJ9.eyJ9.", "garbage",
		strings.Repeat("A", MaxTokenSize+1),
		base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256"}`)) + ".bnVsbA.",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, a := range []Action{ActionPublish, ActionSubscribe, 0} {
			g, err := v.Validate(raw, a)
			tkCheckOutcome(t, g, err)
		}
	})
}

// FuzzSignedClaims signs arbitrary headers' typ and claims with a trusted
// key, so that the fuzzer reaches what a forger cannot: the claims and
// authorization_details parsers behind the signature check.
func FuzzSignedClaims(f *testing.F) {
	v, pub, _ := tkFuzzValidator(f)
	d := func(body string) string {
		return `{"type":"https://mercure.rocks/authorization-detail",` + body + `}`
	}
	for _, c := range []string{
		tkClaims(f, nil),
		tkDetails(f, `[`+d(`"actions":["publish","subscribe","x"],"topics":[{"match":"*"},{"match":"/a/:id","match_type":"urlpattern"}],"payload":{"p":[1,2]}`)+`]`),
		tkDetails(f, `[`+d(`"actions":[1],"topics":[{"match":"x"}]`)+`,{"type":"other"}]`),
		tkDetails(f, `[`+d(`"actions":["subscribe"],"topics":[{"match":"https://example.com/(","match_type":"urlpattern"}]`)+`]`),
		tkDetails(f, `{"not":"an array"}`),
		`{"mercure":{"publish":["https://example.com/{+path}","*"],"subscribe":["{?q}"],"payload":"x"}}`,
		`{"exp":1e400}`, `{"exp":-1,"nbf":"x"}`, `{"aud":[[]]}`, `null`, `[]`, `{}`,
	} {
		f.Add("at+jwt", []byte(c))
		f.Add("JWT", []byte(c))
	}
	f.Fuzz(func(t *testing.T, typ string, claims []byte) {
		hdr := map[string]any{"alg": "HS256"}
		if typ != "" {
			hdr["typ"] = typ
		}
		tok := tkSign(t, pub, hdr, string(claims))
		g, err := v.Validate(tok, ActionPublish)
		tkCheckOutcome(t, g, err)
		if err == nil && !g.Legacy {
			// Accepted draft-08 tokens passed every claim check.
			if g.Issuer != tkIssuer || !g.Expires.After(tkNow) {
				t.Fatalf("accepted %s as %+v", claims, g)
			}
		}
	})
}
