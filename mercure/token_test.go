package mercure

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-hub/herald/hub"
)

// Test fixtures. Names carry a tk prefix so that they do not collide with
// the handler tests of the same package.

var tkNow = time.Unix(1767225300, 0)

const (
	tkIssuer   = "https://example.com"
	tkAudience = "https://hub.example.com/.well-known/mercure"
)

// tkPEMs holds generated key material, PEM-encoded as configuration has it.
type tkPEMs struct {
	secret                           string
	rsaPriv, rsaPrivPKCS1, rsaPub    string
	rsaPubPKCS1, rsaCert             string
	ecPriv, ecPrivSEC1, ecPub, ec384 string
	edPriv, edPub                    string
	otherRSAPriv, otherEC, otherEd   string
	p224Pub                          string
}

var tkKeyMaterial = sync.OnceValue(func() tkPEMs {
	enc := func(typ string, der []byte, err error) string {
		if err != nil {
			panic(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	must(err)
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	must(err)
	_, otherEd, err := ed25519.GenerateKey(rand.Reader)
	must(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer"},
		NotBefore:    tkNow.Add(-time.Hour),
		NotAfter:     tkNow.Add(time.Hour),
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rsaKey.PublicKey, rsaKey)
	must(err)

	var p tkPEMs
	p.secret = "0123456789abcdef0123456789abcdef-secret"
	der, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	p.rsaPriv = enc("PRIVATE KEY", der, err)
	p.rsaPrivPKCS1 = enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey), nil)
	der, err = x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	p.rsaPub = enc("PUBLIC KEY", der, err)
	p.rsaPubPKCS1 = enc("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey), nil)
	p.rsaCert = enc("CERTIFICATE", cert, nil)
	der, err = x509.MarshalPKCS8PrivateKey(otherRSA)
	p.otherRSAPriv = enc("PRIVATE KEY", der, err)
	der, err = x509.MarshalPKCS8PrivateKey(ecKey)
	p.ecPriv = enc("PRIVATE KEY", der, err)
	der, err = x509.MarshalECPrivateKey(ecKey)
	p.ecPrivSEC1 = enc("EC PRIVATE KEY", der, err)
	der, err = x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	p.ecPub = enc("PUBLIC KEY", der, err)
	der, err = x509.MarshalPKCS8PrivateKey(ec384)
	p.ec384 = enc("PRIVATE KEY", der, err)
	der, err = x509.MarshalPKCS8PrivateKey(otherEC)
	p.otherEC = enc("PRIVATE KEY", der, err)
	der, err = x509.MarshalPKIXPublicKey(&p224.PublicKey)
	p.p224Pub = enc("PUBLIC KEY", der, err)
	der, err = x509.MarshalPKCS8PrivateKey(edKey)
	p.edPriv = enc("PRIVATE KEY", der, err)
	der, err = x509.MarshalPKIXPublicKey(edPub)
	p.edPub = enc("PUBLIC KEY", der, err)
	der, err = x509.MarshalPKCS8PrivateKey(otherEd)
	p.otherEd = enc("PRIVATE KEY", der, err)
	return p
})

func tkKey(t testing.TB, value string, algs ...string) *Key {
	t.Helper()
	k, err := ParseKey(value, algs)
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	return k
}

// tkSigner is one key family: a signing key for the issuer and the key the
// hub is configured with.
type tkSigner struct {
	name     string
	alg      string
	sign     *Key // private or secret
	verify   *Key // what the hub holds
	stranger *Key // same family, not trusted
}

func tkSigners(t testing.TB) []tkSigner {
	p := tkKeyMaterial()
	return []tkSigner{
		{"HS256", "HS256", tkKey(t, p.secret), tkKey(t, p.secret), tkKey(t, p.secret+"x")},
		{"RS256", "RS256", tkKey(t, p.rsaPriv), tkKey(t, p.rsaPub), tkKey(t, p.otherRSAPriv)},
		{"ES256", "ES256", tkKey(t, p.ecPriv), tkKey(t, p.ecPub), tkKey(t, p.otherEC)},
		{"EdDSA", "EdDSA", tkKey(t, p.edPriv), tkKey(t, p.edPub), tkKey(t, p.otherEd)},
	}
}

func tkValidator(t testing.TB, pub, sub *Key, mod func(*TokenConfig)) *Validator {
	t.Helper()
	c := TokenConfig{
		PublisherKey:  pub,
		SubscriberKey: sub,
		Issuer:        tkIssuer,
		Audience:      tkAudience,
		Draft7:        true,
		Draft8:        true,
		Base:          tkAudience,
		Now:           func() time.Time { return tkNow },
	}
	if mod != nil {
		mod(&c)
	}
	v, err := NewValidator(c)
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	return v
}

// tkSign builds a compact JWS by hand, so that tests control every byte of
// header and claims. alg "none" gives an unsigned token.
func tkSign(t testing.TB, k *Key, header map[string]any, claims string) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	ss := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	alg, _ := header["alg"].(string)
	if alg == "none" {
		return ss + "."
	}
	sig, err := jwt.GetSigningMethod(alg).Sign(ss, k.sign)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return ss + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// tkClaims returns valid draft-08 claims with changes: a nil value deletes
// a claim.
func tkClaims(t testing.TB, changes map[string]any) string {
	t.Helper()
	c := map[string]any{
		"iss":       tkIssuer,
		"aud":       tkAudience,
		"sub":       "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
		"client_id": tkIssuer,
		"iat":       tkNow.Unix() - 60,
		"exp":       tkNow.Unix() + 300,
		"jti":       "urn:uuid:e70ff8d7-59d5-4a92-b0b7-505e8f6d09fa",
		"authorization_details": []any{map[string]any{
			"type":    tokenDetailType,
			"actions": []string{"publish", "subscribe"},
			"topics":  []any{map[string]any{"match": "https://example.com/books/:id", "match_type": "urlpattern"}},
		}},
	}
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tkDetail builds a draft-08 claims set carrying the given details JSON.
func tkDetails(t testing.TB, details string) string {
	return tkClaims(t, map[string]any{"authorization_details": json.RawMessage(details)})
}

func tkWantError(t *testing.T, err error, desc string) {
	t.Helper()
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("error = %v (%T), want *TokenError", err, err)
	}
	if te.Code != "invalid_token" || te.Status != 401 {
		t.Errorf("error = %+v, want invalid_token 401", te)
	}
	if desc != "" && !strings.Contains(te.Description, desc) {
		t.Errorf("description = %q, want it to contain %q", te.Description, desc)
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	p := tkKeyMaterial()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(p.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(pemFile, []byte(p.ecPriv), 0o600); err != nil {
		t.Fatal(err)
	}
	encrypted := "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"

	tests := []struct {
		name     string
		value    string
		algs     []string
		kind     string
		wantAlgs []string
		canSign  bool
		weak     bool
		err      string
	}{
		{name: "secret", value: p.secret, kind: "hmac", wantAlgs: []string{"HS256"}, canSign: true},
		{name: "short secret is weak", value: "!ChangeMe!", kind: "hmac", wantAlgs: []string{"HS256"}, canSign: true, weak: true},
		{name: "secret too short for HS512", value: p.secret, algs: []string{"HS256", "HS512"}, kind: "hmac", wantAlgs: []string{"HS256", "HS512"}, canSign: true, weak: true},
		{name: "secret file", value: "@" + secretFile, kind: "hmac", wantAlgs: []string{"HS256"}, canSign: true},
		{name: "pem file", value: "@" + pemFile, kind: "ecdsa", wantAlgs: []string{"ES256"}, canSign: true},
		{name: "rsa pkcs8", value: p.rsaPriv, kind: "rsa", wantAlgs: []string{"RS256"}, canSign: true},
		{name: "rsa pkcs1", value: p.rsaPrivPKCS1, kind: "rsa", wantAlgs: []string{"RS256"}, canSign: true},
		{name: "rsa pkix public", value: p.rsaPub, kind: "rsa", wantAlgs: []string{"RS256"}},
		{name: "rsa pkcs1 public", value: p.rsaPubPKCS1, kind: "rsa", wantAlgs: []string{"RS256"}},
		{name: "rsa certificate", value: p.rsaCert, kind: "rsa", wantAlgs: []string{"RS256"}},
		{name: "rsa several algs", value: p.rsaPub, algs: []string{"PS256", "RS512", "PS256"}, kind: "rsa", wantAlgs: []string{"PS256", "RS512"}},
		{name: "ec private", value: p.ecPriv, kind: "ecdsa", wantAlgs: []string{"ES256"}, canSign: true},
		{name: "ec sec1", value: p.ecPrivSEC1, kind: "ecdsa", wantAlgs: []string{"ES256"}, canSign: true},
		{name: "ec public", value: p.ecPub, kind: "ecdsa", wantAlgs: []string{"ES256"}},
		{name: "ec p384", value: p.ec384, kind: "ecdsa", wantAlgs: []string{"ES384"}, canSign: true},
		{name: "ed25519 private", value: p.edPriv, kind: "ed25519", wantAlgs: []string{"EdDSA"}, canSign: true},
		{name: "ed25519 public", value: p.edPub, kind: "ed25519", wantAlgs: []string{"EdDSA"}},

		{name: "empty", value: "", err: "empty key"},
		{name: "none", value: p.secret, algs: []string{"none"}, err: "never allowed"},
		{name: "none on rsa", value: p.rsaPub, algs: []string{"None"}, err: "never allowed"},
		{name: "rsa pem as hmac secret", value: p.rsaPub, algs: []string{"HS256"}, err: "cannot be used"},
		{name: "secret with RS256", value: p.secret, algs: []string{"RS256"}, err: "cannot be used"},
		{name: "ec with wrong curve alg", value: p.ecPub, algs: []string{"ES384"}, err: "cannot be used"},
		{name: "ec with EdDSA", value: p.ecPub, algs: []string{"EdDSA"}, err: "cannot be used"},
		{name: "ed25519 with ES256", value: p.edPub, algs: []string{"ES256"}, err: "cannot be used"},
		{name: "unknown alg", value: p.secret, algs: []string{"HS1"}, err: "cannot be used"},
		{name: "broken pem", value: "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n", err: "invalid PEM"},
		{name: "bad der", value: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", err: "parse key"},
		{name: "encrypted pem", value: encrypted, err: "encrypted"},
		{name: "unsupported pem type", value: "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n", err: "unsupported PEM"},
		{name: "p224", value: p.p224Pub, err: "curve"},
		{name: "missing file", value: "@" + filepath.Join(dir, "nope"), err: "read key"},
		{name: "empty file name", value: "@", err: "read key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k, err := ParseKey(tt.value, tt.algs)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseKey error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if k.Kind() != tt.kind || !slices.Equal(k.Algorithms(), tt.wantAlgs) || k.CanSign() != tt.canSign || k.Weak() != tt.weak {
				t.Errorf("key = kind %s algs %v canSign %v weak %v, want %s %v %v %v",
					k.Kind(), k.Algorithms(), k.CanSign(), k.Weak(), tt.kind, tt.wantAlgs, tt.canSign, tt.weak)
			}
		})
	}
}

func TestKeyStringHidesSecret(t *testing.T) {
	t.Parallel()
	const secret = "super-secret-value-that-must-not-leak"
	k := tkKey(t, secret)
	for _, s := range []string{k.String(), k.GoString()} {
		if strings.Contains(s, secret) {
			t.Errorf("key printed as %q", s)
		}
	}
	if got := (*Key)(nil).String(); got != "no key" {
		t.Errorf("nil key = %q", got)
	}
}

func TestNewValidatorConfig(t *testing.T) {
	t.Parallel()
	k := tkKey(t, tkKeyMaterial().secret)
	tests := []struct {
		name string
		c    TokenConfig
		err  bool
	}{
		{"no draft", TokenConfig{PublisherKey: k}, true},
		{"draft8 without issuer", TokenConfig{Draft8: true, Audience: tkAudience}, true},
		{"draft8 without audience", TokenConfig{Draft8: true, Issuer: tkIssuer}, true},
		{"negative limit", TokenConfig{Draft7: true, MaxDetails: -1}, true},
		{"negative leeway", TokenConfig{Draft7: true, Leeway: -time.Second}, true},
		{"draft7 only needs nothing", TokenConfig{Draft7: true}, false},
		{"no keys at all", TokenConfig{Draft8: true, Issuer: tkIssuer, Audience: tkAudience}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := NewValidator(tt.c)
			if (err != nil) != tt.err {
				t.Fatalf("NewValidator error = %v, want error %v", err, tt.err)
			}
			if err == nil && (v.c.MaxDetails != DefaultMaxDetails || v.c.MaxTopicsPerDetail != DefaultMaxTopicsPerDetail || v.c.Now == nil) {
				t.Errorf("defaults not filled: %+v", v.c)
			}
		})
	}
}

// TestValidateDraft8 runs the token validation rules with every key family.
func TestValidateDraft8(t *testing.T) {
	t.Parallel()
	for _, s := range tkSigners(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			v := tkValidator(t, s.verify, s.verify, nil)
			hdr := func(typ any) map[string]any {
				h := map[string]any{"alg": s.alg}
				if typ != nil {
					h["typ"] = typ
				}
				return h
			}
			at := hdr("at+jwt")
			tests := []struct {
				name   string
				token  string
				action Action
				err    string // "" means valid
			}{
				{name: "valid", token: tkSign(t, s.sign, at, tkClaims(t, nil))},
				{name: "valid for publish", token: tkSign(t, s.sign, at, tkClaims(t, nil)), action: ActionPublish},
				{name: "typ application/at+jwt", token: tkSign(t, s.sign, hdr("application/at+jwt"), tkClaims(t, nil))},
				{name: "typ case-insensitive", token: tkSign(t, s.sign, hdr("Application/AT+JWT"), tkClaims(t, nil))},
				{name: "typ not a string", token: tkSign(t, s.sign, hdr(42.0), tkClaims(t, nil)), err: "typ must be a string"},
				{name: "no exp", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"exp": nil})), err: "token has no exp"},
				{name: "exp null", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"exp": json.RawMessage("null")})), err: "token has no exp"},
				{name: "exp as string", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"exp": "soon"})), err: "malformed token"},
				{name: "upper-case EXP is not exp", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"exp": nil, "EXP": tkNow.Unix() + 60})), err: "token has no exp"},
				{name: "expired", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"exp": tkNow.Unix() - 1})), err: "token expired"},
				{name: "expires now", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"exp": tkNow.Unix()})), err: "token expired"},
				{name: "nbf future", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"nbf": tkNow.Unix() + 1})), err: "not valid yet"},
				{name: "nbf now", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"nbf": tkNow.Unix()}))},
				{name: "iat in the future is not checked", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"iat": tkNow.Unix() + 30}))},
				{name: "no iss", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"iss": nil})), err: "token has no iss"},
				{name: "wrong iss", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"iss": "https://evil.example"})), err: "issuer is not trusted"},
				{name: "iss differs by case", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"iss": strings.ToUpper(tkIssuer)})), err: "issuer is not trusted"},
				{name: "no aud", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"aud": nil})), err: "audience does not name this hub"},
				{name: "wrong aud", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"aud": "https://other.example/.well-known/mercure"})), err: "audience does not name this hub"},
				{name: "aud array", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"aud": []string{"https://api.example", tkAudience}}))},
				{name: "aud array without hub", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"aud": []string{"https://api.example"}})), err: "audience"},
				{name: "aud array with non-string", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"aud": []any{tkAudience, 1}})), err: "malformed token"},
				{name: "crit header", token: tkSign(t, s.sign, map[string]any{"alg": s.alg, "typ": "at+jwt", "crit": []string{"exp"}, "exp": 1}, tkClaims(t, nil)), err: "critical"},
				{name: "signed by a stranger", token: tkSign(t, s.stranger, at, tkClaims(t, nil)), err: "invalid signature"},
				{name: "stranger's key in jwk header", token: tkSign(t, s.stranger, map[string]any{"alg": s.alg, "typ": "at+jwt", "jwk": map[string]any{"kty": "oct", "k": "AAAA"}, "jku": "https://evil.example/jwks"}, tkClaims(t, nil)), err: "invalid signature"},
				{name: "alg none", token: tkSign(t, nil, map[string]any{"alg": "none", "typ": "at+jwt"}, tkClaims(t, nil)), err: "unsupported signing algorithm"},
				{name: "no alg", token: tkForge(`{"typ":"at+jwt"}`), err: "unsupported signing algorithm"},
				{name: "alg not a string", token: tkForge(`{"alg":["HS256"],"typ":"at+jwt"}`), err: "unsupported signing algorithm"},
				{name: "unknown alg", token: tkForge(`{"alg":"XS999","typ":"at+jwt"}`), err: "unsupported signing algorithm"},
				{name: "alg of another family", token: tkForge(`{"alg":"` + tkOtherAlg(s.alg) + `","typ":"at+jwt"}`), err: "unsupported signing algorithm"},
				{name: "tampered claims", token: tkTamper(tkSign(t, s.sign, at, tkClaims(t, nil)), tkClaims(t, map[string]any{"sub": "admin"})), err: "invalid signature"},
				{name: "truncated signature", token: tkTruncate(tkSign(t, s.sign, at, tkClaims(t, nil))), err: "invalid signature"},
				{name: "claims null", token: tkSign(t, s.sign, at, "null"), err: "malformed token"},
				{name: "claims array", token: tkSign(t, s.sign, at, "[1]"), err: "malformed token"},
				{name: "no details grants nothing", token: tkSign(t, s.sign, at, tkClaims(t, map[string]any{"authorization_details": nil}))},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					action := tt.action
					if action == 0 {
						action = ActionSubscribe
					}
					g, err := v.Validate(tt.token, action)
					if tt.err != "" {
						if g != nil {
							t.Errorf("grant %+v with error", g)
						}
						tkWantError(t, err, tt.err)
						return
					}
					if err != nil {
						t.Fatalf("Validate: %v", err)
					}
					if g.Legacy || g.Issuer != tkIssuer || !g.Expires.Equal(time.Unix(tkNow.Unix()+300, 0)) {
						t.Errorf("grant = %+v", g)
					}
				})
			}
		})
	}
}

// tkForge returns a token with the given header JSON and a junk signature.
func tkForge(header string) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(header))
	c := base64.RawURLEncoding.EncodeToString([]byte(`{"exp":9999999999}`))
	return h + "." + c + "." + base64.RawURLEncoding.EncodeToString([]byte("sig"))
}

func tkOtherAlg(alg string) string {
	if alg == "HS256" {
		return "RS256"
	}
	return "HS256"
}

// tkTamper swaps a token's claims, keeping its header and signature.
func tkTamper(tok, claims string) string {
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(claims))
	return strings.Join(parts, ".")
}

// tkTruncate drops the last bytes of the signature.
func tkTruncate(tok string) string {
	i := strings.LastIndexByte(tok, '.')
	sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig[:len(sig)-4])
}

func TestValidateRoles(t *testing.T) {
	t.Parallel()
	p := tkKeyMaterial()
	pubKey, subKey := tkKey(t, p.rsaPriv), tkKey(t, p.ecPriv)
	v := tkValidator(t, pubKey, subKey, nil)
	subTok := tkSign(t, subKey, map[string]any{"alg": "ES256", "typ": "at+jwt"}, tkClaims(t, nil))
	pubTok := tkSign(t, pubKey, map[string]any{"alg": "RS256", "typ": "at+jwt"}, tkClaims(t, nil))

	if _, err := v.Validate(subTok, ActionSubscribe); err != nil {
		t.Errorf("subscriber token for subscribe: %v", err)
	}
	if _, err := v.Validate(pubTok, ActionPublish); err != nil {
		t.Errorf("publisher token for publish: %v", err)
	}
	// A subscriber key's token must not publish, and the other way round.
	_, err := v.Validate(subTok, ActionPublish)
	tkWantError(t, err, "unsupported signing algorithm")
	_, err = v.Validate(pubTok, ActionSubscribe)
	tkWantError(t, err, "unsupported signing algorithm")
	_, err = v.Validate(pubTok, Action(0))
	tkWantError(t, err, "unknown action")

	// Same family, different keys: the signature decides.
	other := tkKey(t, p.otherRSAPriv)
	v2 := tkValidator(t, pubKey, other, nil)
	_, err = v2.Validate(pubTok, ActionSubscribe)
	tkWantError(t, err, "invalid signature")

	// A role without a key takes no token.
	v3 := tkValidator(t, pubKey, nil, nil)
	_, err = v3.Validate(pubTok, ActionSubscribe)
	tkWantError(t, err, "subscribe tokens are not accepted")
}

// TestAlgorithmConfusion signs HS256 tokens with the hub's public key as the
// HMAC secret, the classic attack on libraries that let alg choose.
func TestAlgorithmConfusion(t *testing.T) {
	t.Parallel()
	p := tkKeyMaterial()
	for _, pub := range []string{p.rsaPub, p.ecPub, p.edPub, p.rsaCert} {
		hubKey := tkKey(t, pub)
		v := tkValidator(t, hubKey, hubKey, nil)
		forger := &Key{kind: "hmac", verify: []byte(pub), sign: []byte(pub), algs: tokenAlgsHMAC}
		for _, alg := range tokenAlgsHMAC {
			tok := tkSign(t, forger, map[string]any{"alg": alg, "typ": "at+jwt"}, tkClaims(t, nil))
			_, err := v.Validate(tok, ActionPublish)
			tkWantError(t, err, "unsupported signing algorithm")
			legacy := tkSign(t, forger, map[string]any{"alg": alg}, `{"mercure":{"publish":["*"]}}`)
			_, err = v.Validate(legacy, ActionPublish)
			tkWantError(t, err, "unsupported signing algorithm")
		}
		// Even a key whose allowlist is forced wider than its family
		// cannot verify with the wrong algorithm: the library checks the
		// Go type of the key.
		forced := *hubKey
		forced.algs = append(slices.Clone(hubKey.algs), "HS256")
		v2 := tkValidator(t, &forced, &forced, nil)
		tok := tkSign(t, forger, map[string]any{"alg": "HS256", "typ": "at+jwt"}, tkClaims(t, nil))
		_, err := v2.Validate(tok, ActionPublish)
		tkWantError(t, err, "")
	}
	// And the other way: an HMAC hub refuses asymmetric algorithms.
	secret := tkKey(t, p.secret)
	v := tkValidator(t, secret, secret, nil)
	tok := tkSign(t, tkKey(t, p.rsaPriv), map[string]any{"alg": "RS256", "typ": "at+jwt"}, tkClaims(t, nil))
	_, err := v.Validate(tok, ActionPublish)
	tkWantError(t, err, "unsupported signing algorithm")
}

func TestValidateDrafts(t *testing.T) {
	t.Parallel()
	k := tkKey(t, tkKeyMaterial().secret)
	at := tkSign(t, k, map[string]any{"alg": "HS256", "typ": "at+jwt"}, tkClaims(t, nil))
	legacy := tkSign(t, k, map[string]any{"alg": "HS256", "typ": "JWT"}, `{"mercure":{"publish":["*"]}}`)
	noTyp := tkSign(t, k, map[string]any{"alg": "HS256"}, `{"mercure":{"publish":["*"]}}`)

	only8 := tkValidator(t, k, k, func(c *TokenConfig) { c.Draft7 = false })
	only7 := tkValidator(t, k, k, func(c *TokenConfig) { c.Draft8 = false })

	if _, err := only8.Validate(at, ActionPublish); err != nil {
		t.Errorf("draft-08 hub, at+jwt: %v", err)
	}
	_, err := only8.Validate(legacy, ActionPublish)
	tkWantError(t, err, "token typ must be at+jwt")
	_, err = only8.Validate(noTyp, ActionPublish)
	tkWantError(t, err, "token typ must be at+jwt")

	for _, tok := range []string{legacy, noTyp} {
		g, err := only7.Validate(tok, ActionPublish)
		if err != nil || !g.Legacy || !g.CanPublish([]string{"https://example.com/x"}) {
			t.Errorf("draft-07 hub, legacy token: %+v, %v", g, err)
		}
	}
	_, err = only7.Validate(at, ActionPublish)
	tkWantError(t, err, "at+jwt tokens are not accepted")
}

func TestValidateDraft7(t *testing.T) {
	t.Parallel()
	for _, s := range tkSigners(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			v := tkValidator(t, s.verify, s.verify, func(c *TokenConfig) { c.MaxTopicsPerDetail = 3 })
			jwtHdr := map[string]any{"alg": s.alg, "typ": "JWT"}
			tests := []struct {
				name    string
				claims  string
				err     string
				check   func(*Grant) bool
				expires time.Time
			}{
				{
					name:   "no exp, selectors and payload",
					claims: `{"mercure":{"publish":["https://example.com/books/{id}"],"subscribe":["https://example.com/users/foo/{?topic}","https://example.com/a"],"payload":{"user":"foo"}}}`,
					check: func(g *Grant) bool {
						p, ok := g.Payload("anything")
						return g.Legacy && g.CanPublish([]string{"https://example.com/books/1"}) &&
							!g.CanPublish([]string{"https://example.com/books/1", "https://example.com/other"}) &&
							g.CanRead([]string{"https://example.com/books/1", "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1"}) &&
							!g.CanRead([]string{"https://example.com/books/1"}) &&
							ok && string(p) == `{"user":"foo"}`
					},
				},
				{
					name:    "exp in the future",
					claims:  `{"exp":` + itoa(tkNow.Unix()+60) + `,"mercure":{"subscribe":["*"]}}`,
					expires: time.Unix(tkNow.Unix()+60, 0),
					check:   func(g *Grant) bool { return g.CanRead([]string{"x"}) && !g.CanPublish([]string{"x"}) },
				},
				{name: "expired", claims: `{"exp":` + itoa(tkNow.Unix()-60) + `,"mercure":{"subscribe":["*"]}}`, err: "token expired"},
				{name: "nbf future", claims: `{"nbf":` + itoa(tkNow.Unix()+60) + `,"mercure":{"subscribe":["*"]}}`, err: "not valid yet"},
				{
					name:   "iss and aud are not checked",
					claims: `{"iss":"anyone","aud":"elsewhere","sub":"bob","mercure":{"subscribe":["*"]}}`,
					check:  func(g *Grant) bool { return g.Subject == "bob" && g.Issuer == "anyone" },
				},
				{name: "no mercure claim grants nothing", claims: `{"sub":"x"}`, check: tkGrantsNothing},
				{name: "mercure null grants nothing", claims: `{"mercure":null}`, check: tkGrantsNothing},
				{name: "empty lists grant nothing", claims: `{"mercure":{"publish":[],"subscribe":[]}}`, check: tkGrantsNothing},
				{name: "null payload is no payload", claims: `{"mercure":{"payload":null}}`, check: func(g *Grant) bool { _, ok := g.Payload("x"); return !ok }},
				{name: "draft-08 details are ignored", claims: tkClaims(t, nil), check: tkGrantsNothing, expires: time.Unix(tkNow.Unix()+300, 0)},
				{name: "Mercure is not mercure", claims: `{"Mercure":{"publish":["*"]}}`, check: tkGrantsNothing},
				{name: "mercure not an object", claims: `{"mercure":["*"]}`, err: "malformed mercure claim"},
				{name: "publish not an array", claims: `{"mercure":{"publish":"*"}}`, err: "publish must be an array of strings"},
				{name: "subscribe with a number", claims: `{"mercure":{"subscribe":["a",1]}}`, err: "subscribe must be an array of strings"},
				{name: "too many selectors", claims: `{"mercure":{"subscribe":["a","b","c","d"]}}`, err: "too many subscribe selectors"},
				{name: "selector with control character", claims: `{"mercure":{"publish":["a\nb"]}}`, err: "invalid publish selector"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					g, err := v.Validate(tkSign(t, s.sign, jwtHdr, tt.claims), ActionSubscribe)
					if tt.err != "" {
						tkWantError(t, err, tt.err)
						return
					}
					if err != nil {
						t.Fatalf("Validate: %v", err)
					}
					if !g.Legacy || !g.Expires.Equal(tt.expires) || (tt.check != nil && !tt.check(g)) {
						t.Errorf("grant = %+v", g)
					}
				})
			}
		})
	}
}

func tkGrantsNothing(g *Grant) bool {
	_, ok := g.Payload("*")
	return len(g.Publish) == 0 && len(g.Subscribe) == 0 && !ok &&
		!g.CanPublish([]string{"x"}) && !g.CanRead([]string{"x"})
}

func itoa(n int64) string { return big.NewInt(n).String() }

func TestAuthorizationDetails(t *testing.T) {
	t.Parallel()
	k := tkKey(t, tkKeyMaterial().secret)
	v := tkValidator(t, k, k, func(c *TokenConfig) { c.MaxDetails = 2; c.MaxTopicsPerDetail = 2 })
	const typ = `"type":"https://mercure.rocks/authorization-detail"`
	d := func(body string) string { return `{` + typ + `,` + body + `}` }
	tests := []struct {
		name    string
		details string
		err     string
		check   func(*Grant) bool
	}{
		{
			name:    "exact and urlpattern, per action",
			details: `[` + d(`"actions":["publish"],"topics":[{"match":"https://example.com/a"}]`) + `,` + d(`"actions":["subscribe"],"topics":[{"match":"https://example.com/books/:id","match_type":"urlpattern"},{"match":"https://example.com/b","match_type":"exact"}]`) + `]`,
			check: func(g *Grant) bool {
				return g.CanPublish([]string{"https://example.com/a"}) && !g.CanPublish([]string{"https://example.com/b"}) &&
					g.CanRead([]string{"https://example.com/books/7"}) && g.CanRead([]string{"https://example.com/b"}) &&
					!g.CanRead([]string{"https://example.com/a"}) && !g.CanRead([]string{"https://example.com/books/7/x"})
			},
		},
		{
			name:    "relative pattern resolves against the hub",
			details: `[` + d(`"actions":["subscribe"],"topics":[{"match":"/topics/:id","match_type":"urlpattern"}]`) + `]`,
			check:   func(g *Grant) bool { return g.CanRead([]string{"https://hub.example.com/topics/1"}) },
		},
		{
			name:    "wildcard without match_type",
			details: `[` + d(`"actions":["publish","subscribe"],"topics":[{"match":"*"}]`) + `]`,
			check:   func(g *Grant) bool { return g.CanPublish([]string{"a", "b"}) && g.CanRead([]string{"c"}) },
		},
		{
			name:    "wildcard with urlpattern",
			details: `[` + d(`"actions":["publish"],"topics":[{"match":"*","match_type":"urlpattern"}]`) + `]`,
			check:   func(g *Grant) bool { return g.CanPublish([]string{"urn:x"}) },
		},
		{
			name:    "exact is exact",
			details: `[` + d(`"actions":["publish"],"topics":[{"match":"https://example.com/books/:id"}]`) + `]`,
			check: func(g *Grant) bool {
				return !g.CanPublish([]string{"https://example.com/books/1"}) && g.CanPublish([]string{"https://example.com/books/:id"})
			},
		},
		{
			name:    "unknown actions grant nothing",
			details: `[` + d(`"actions":["presence","PUBLISH"],"topics":[{"match":"*"}]`) + `]`,
			check:   tkGrantsNothing,
		},
		{
			name:    "other detail types are ignored, whatever their shape",
			details: `[{"type":"payment_initiation","actions":[1],"topics":"x"},{"type":"https://mercure.rocks/authorization-detail/"},{"actions":["publish"],"topics":[{"match":"*"}]},{"type":7}]`,
			check:   tkGrantsNothing,
		},
		{
			name:    "other types do not count toward the limit",
			details: `[{"type":"a"},{"type":"b"},{"type":"c"},` + d(`"actions":["publish"],"topics":[{"match":"*"}]`) + `]`,
			check:   func(g *Grant) bool { return g.CanPublish([]string{"x"}) },
		},
		{name: "empty array grants nothing", details: `[]`, check: tkGrantsNothing},
		{name: "extra fields are ignored", details: `[` + d(`"actions":["publish"],"topics":[{"match":"*","note":1}],"locations":["x"]`) + `]`, check: func(g *Grant) bool { return g.CanPublish([]string{"x"}) }},

		{name: "not an array", details: `{"type":"x"}`, err: "not an array"},
		{name: "null", details: `null`, err: "not an array"},
		{name: "entry not an object", details: `["x"]`, err: "entry 0: not an object"},
		{name: "entry null", details: `[null]`, err: "entry 0: not an object"},
		{name: "no actions", details: `[` + d(`"topics":[{"match":"*"}]`) + `]`, err: "actions must be a non-empty array"},
		{name: "empty actions", details: `[` + d(`"actions":[],"topics":[{"match":"*"}]`) + `]`, err: "actions must be a non-empty array"},
		{name: "actions a string", details: `[` + d(`"actions":"publish","topics":[{"match":"*"}]`) + `]`, err: "actions must be a non-empty array"},
		{name: "non-string action", details: `[` + d(`"actions":["publish",1],"topics":[{"match":"*"}]`) + `]`, err: "actions must be strings"},
		{name: "no topics", details: `[` + d(`"actions":["publish"]`) + `]`, err: "topics must be a non-empty array"},
		{name: "empty topics", details: `[` + d(`"actions":["publish"],"topics":[]`) + `]`, err: "topics must be a non-empty array"},
		{name: "topic a string", details: `[` + d(`"actions":["publish"],"topics":["*"]`) + `]`, err: "topic matcher is not an object"},
		{name: "topic without match", details: `[` + d(`"actions":["publish"],"topics":[{"match_type":"exact"}]`) + `]`, err: "match must be a non-empty string"},
		{name: "empty match", details: `[` + d(`"actions":["publish"],"topics":[{"match":""}]`) + `]`, err: "match must be a non-empty string"},
		{name: "match a number", details: `[` + d(`"actions":["publish"],"topics":[{"match":1}]`) + `]`, err: "match must be a non-empty string"},
		{name: "unknown match_type", details: `[` + d(`"actions":["publish"],"topics":[{"match":"a","match_type":"uritemplate"}]`) + `]`, err: "unsupported match_type"},
		{name: "match_type case matters", details: `[` + d(`"actions":["publish"],"topics":[{"match":"a","match_type":"Exact"}]`) + `]`, err: "unsupported match_type"},
		{name: "match_type not a string", details: `[` + d(`"actions":["publish"],"topics":[{"match":"a","match_type":true}]`) + `]`, err: "match_type must be a string"},
		{name: "invalid pattern", details: `[` + d(`"actions":["publish"],"topics":[{"match":"https://example.com/(","match_type":"urlpattern"}]`) + `]`, err: "invalid urlpattern matcher"},
		{name: "control character", details: `[` + d(`"actions":["publish"],"topics":[{"match":"a\u0000b"}]`) + `]`, err: "invalid exact matcher"},
		{name: "pattern too long", details: `[` + d(`"actions":["publish"],"topics":[{"match":"`+strings.Repeat("a", 2049)+`"}]`) + `]`, err: "invalid exact matcher"},
		{name: "payload not an object", details: `[` + d(`"actions":["subscribe"],"topics":[{"match":"*"}],"payload":[]`) + `]`, err: "payload must be an object"},
		{name: "payload null", details: `[` + d(`"actions":["subscribe"],"topics":[{"match":"*"}],"payload":null`) + `]`, err: "payload must be an object"},
		{name: "one bad detail spoils all", details: `[` + d(`"actions":["publish"],"topics":[{"match":"*"}]`) + `,` + d(`"actions":["subscribe"],"topics":[{"match":"x","match_type":"regex"}]`) + `]`, err: "entry 1: unsupported match_type"},
		{name: "too many details", details: `[` + strings.Repeat(d(`"actions":["publish"],"topics":[{"match":"*"}]`)+`,`, 2) + d(`"actions":["publish"],"topics":[{"match":"*"}]`) + `]`, err: "too many mercure authorization details"},
		{name: "too many topics", details: `[` + d(`"actions":["publish"],"topics":[{"match":"a"},{"match":"b"},{"match":"c"}]`) + `]`, err: "too many topics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := tkSign(t, k, map[string]any{"alg": "HS256", "typ": "at+jwt"}, tkDetails(t, tt.details))
			g, err := v.Validate(tok, ActionPublish)
			if tt.err != "" {
				tkWantError(t, err, tt.err)
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tt.check != nil && !tt.check(g) {
				t.Errorf("grant = %+v", g)
			}
		})
	}
}

func TestGrantPayload(t *testing.T) {
	t.Parallel()
	k := tkKey(t, tkKeyMaterial().secret)
	v := tkValidator(t, k, k, nil)
	// The example of draft-08 "Payloads", with a detail without payload
	// and a publish-only detail in front.
	details := `[
	  {"type":"https://mercure.rocks/authorization-detail","actions":["publish"],"topics":[{"match":"*"}],"payload":{"never":"publish details carry no payload"}},
	  {"type":"https://mercure.rocks/authorization-detail","actions":["subscribe"],"topics":[{"match":"https://example.com/foo"}],"payload":{"custom1":"foo"}},
	  {"type":"https://mercure.rocks/authorization-detail","actions":["subscribe"],"topics":[{"match":"https://example.com/bar/:id","match_type":"urlpattern"}],"payload":{"custom2":"bar"}},
	  {"type":"https://mercure.rocks/authorization-detail","actions":["subscribe"],"topics":[{"match":"https://example.com/nopayload"}]},
	  {"type":"https://mercure.rocks/authorization-detail","actions":["subscribe"],"topics":[{"match":"*"}],"payload":{"custom3":"default"}}
	]`
	tok := tkSign(t, k, map[string]any{"alg": "HS256", "typ": "at+jwt"}, tkDetails(t, details))
	g, err := v.Validate(tok, ActionSubscribe)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		matcher, want string
	}{
		{"https://example.com/foo", `{"custom1":"foo"}`},
		{"https://example.com/bar/:id", `{"custom2":"bar"}`},
		{"https://example.com/bar/1", `{"custom2":"bar"}`},
		{"https://example.com/nopayload", ""},
		{"https://example.com/foo/{id}", `{"custom3":"default"}`},
		{"*", `{"custom3":"default"}`},
	} {
		p, ok := g.Payload(tt.matcher)
		if ok != (tt.want != "") || string(p) != tt.want {
			t.Errorf("Payload(%q) = %s, %v; want %s", tt.matcher, p, ok, tt.want)
		}
	}
	var nilGrant *Grant
	if _, ok := nilGrant.Payload("x"); ok || nilGrant.CanRead([]string{"x"}) || nilGrant.CanPublish([]string{"x"}) {
		t.Error("nil grant grants")
	}
	if g.CanPublish(nil) {
		t.Error("CanPublish with no topics")
	}
}

func TestValidateSizeAndGarbage(t *testing.T) {
	t.Parallel()
	k := tkKey(t, tkKeyMaterial().secret)
	v := tkValidator(t, k, k, nil)
	valid := tkSign(t, k, map[string]any{"alg": "HS256", "typ": "at+jwt"}, tkClaims(t, nil))
	big := tkSign(t, k, map[string]any{"alg": "HS256", "typ": "at+jwt"}, tkClaims(t, map[string]any{"pad": strings.Repeat("x", MaxTokenSize)}))
	tests := []struct{ token, err string }{
		{big, "token too large"},
		{"", "malformed token"},
		{"garbage", "malformed token"},
		{"a.b", "malformed token"},
		{"a.b.c.d", "malformed token"},
		{valid + ".", "malformed token"},
		{valid[:len(valid)/2], ""},
		{"!!!.???.***", "malformed token"},
		{strings.Replace(valid, ".", "=.", 1), "malformed token"},
		{"eyJhbGciOiJIUzI1NiJ9.eyJ9.sig", "malformed token"},
		{base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"at+jwt"}`)) + ".e30.", "invalid signature"},
	}
	for _, tt := range tests {
		_, err := v.Validate(tt.token, ActionSubscribe)
		tkWantError(t, err, tt.err)
	}
}

func TestLeeway(t *testing.T) {
	t.Parallel()
	k := tkKey(t, tkKeyMaterial().secret)
	v := tkValidator(t, k, k, func(c *TokenConfig) { c.Leeway = 5 * time.Second })
	hdr := map[string]any{"alg": "HS256", "typ": "at+jwt"}
	g, err := v.Validate(tkSign(t, k, hdr, tkClaims(t, map[string]any{"exp": tkNow.Unix() - 2, "nbf": tkNow.Unix() + 2})), ActionSubscribe)
	if err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	if want := time.Unix(tkNow.Unix()+3, 0); !g.Expires.Equal(want) {
		t.Errorf("Expires = %v, want exp+leeway %v", g.Expires, want)
	}
	_, err = v.Validate(tkSign(t, k, hdr, tkClaims(t, map[string]any{"exp": tkNow.Unix() - 5})), ActionSubscribe)
	tkWantError(t, err, "token expired")
	_, err = v.Validate(tkSign(t, k, hdr, tkClaims(t, map[string]any{"nbf": tkNow.Unix() + 6})), ActionSubscribe)
	tkWantError(t, err, "not valid yet")
}

func TestTokenErrorDescriptions(t *testing.T) {
	t.Parallel()
	// Every description must fit in an RFC 6750 quoted error_description.
	safe := regexp.MustCompile(`^[\x20\x21\x23-\x5b\x5d-\x7e]+$`)
	k := tkKey(t, tkKeyMaterial().secret)
	v := tkValidator(t, k, k, nil)
	evil := `[{"type":"https://mercure.rocks/authorization-detail","actions":["publish"],"topics":[{"match":"\"\\\u0001","match_type":"\"\u00e9"}]}]`
	_, err := v.Validate(tkSign(t, k, map[string]any{"alg": "HS256", "typ": "at+jwt"}, tkDetails(t, evil)), ActionPublish)
	var te *TokenError
	if !errors.As(err, &te) || !safe.MatchString(te.Description) || !strings.Contains(te.Error(), "invalid_token") {
		t.Errorf("error = %v", err)
	}
}

func TestMint(t *testing.T) {
	t.Parallel()
	for _, s := range tkSigners(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			v := tkValidator(t, s.verify, s.verify, nil)
			clock := func() time.Time { return tkNow }

			tok, err := Mint(MintOptions{
				Key: s.sign, Publish: []string{"https://example.com/a", "urlpattern:/books/:id"},
				Subscribe: []string{"*"}, Payload: json.RawMessage(`{"tenant":"t1"}`),
				TTL: time.Hour, Issuer: tkIssuer, Audience: tkAudience, Now: clock,
			})
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			g, err := v.Validate(tok, ActionPublish)
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			p, ok := g.Payload("https://example.com/whatever")
			if g.Legacy || g.Subject != "herald-cli" || !g.Expires.Equal(tkNow.Add(time.Hour)) ||
				!g.CanPublish([]string{"https://example.com/a", "https://hub.example.com/books/1"}) ||
				g.CanPublish([]string{"https://example.com/b"}) || !g.CanRead([]string{"urn:any"}) ||
				!ok || string(p) != `{"tenant":"t1"}` {
				t.Errorf("grant = %+v", g)
			}
			tkCheckAccessToken(t, tok, s.alg)

			legacy, err := Mint(MintOptions{
				Key: s.sign, Legacy: true, Publish: []string{"https://example.com/books/{id}"},
				Subscribe: []string{"*"}, Payload: json.RawMessage(`["anything"]`), Now: clock,
			})
			if err != nil {
				t.Fatalf("Mint legacy: %v", err)
			}
			g, err = v.Validate(legacy, ActionSubscribe)
			if err != nil {
				t.Fatalf("Validate legacy: %v", err)
			}
			p, ok = g.Payload("x")
			if !g.Legacy || !g.Expires.IsZero() || !g.CanPublish([]string{"https://example.com/books/9"}) ||
				!g.CanRead([]string{"x"}) || !ok || string(p) != `["anything"]` {
				t.Errorf("legacy grant = %+v", g)
			}

			// Legacy with a TTL carries exp.
			legacy, err = Mint(MintOptions{Key: s.sign, Legacy: true, Subscribe: []string{"*"}, TTL: time.Minute, Subject: "bob", Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			if g, err = v.Validate(legacy, ActionSubscribe); err != nil || !g.Expires.Equal(tkNow.Add(time.Minute)) || g.Subject != "bob" {
				t.Errorf("legacy with ttl: %+v, %v", g, err)
			}
		})
	}
}

// tkCheckAccessToken checks that a minted draft-08 token carries everything
// RFC 9068 asks issuers for.
func tkCheckAccessToken(t *testing.T, tok, alg string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	var h, c map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &c) != nil {
		t.Fatalf("undecodable token %q", tok)
	}
	if h["typ"] != "at+jwt" || h["alg"] != alg {
		t.Errorf("header = %v", h)
	}
	for _, name := range []string{"iss", "exp", "aud", "sub", "client_id", "iat", "jti", "authorization_details"} {
		if _, ok := c[name]; !ok {
			t.Errorf("claim %s missing in %v", name, c)
		}
	}
	if c["client_id"] != c["iss"] || c["iat"] != float64(tkNow.Unix()) {
		t.Errorf("claims = %v", c)
	}
	jti, _ := c["jti"].(string)
	if !regexp.MustCompile(`^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(jti) {
		t.Errorf("jti = %q", jti)
	}
	details, _ := c["authorization_details"].([]any)
	if len(details) != 2 {
		t.Errorf("authorization_details = %v, want one per action", details)
	}
}

func TestMintErrors(t *testing.T) {
	t.Parallel()
	p := tkKeyMaterial()
	secret, pub := tkKey(t, p.secret), tkKey(t, p.ecPub)
	ok := MintOptions{Key: secret, TTL: time.Hour, Issuer: tkIssuer, Audience: tkAudience, Subscribe: []string{"*"}}
	tests := []struct {
		name string
		mod  func(*MintOptions)
		err  string
	}{
		{"no key", func(o *MintOptions) { o.Key = nil }, "cannot sign"},
		{"public key", func(o *MintOptions) { o.Key = pub }, "cannot sign"},
		{"alg not allowed", func(o *MintOptions) { o.Alg = "HS512" }, "not allowed"},
		{"alg none", func(o *MintOptions) { o.Alg = "none" }, "not allowed"},
		{"no ttl", func(o *MintOptions) { o.TTL = 0 }, "ttl"},
		{"negative ttl", func(o *MintOptions) { o.TTL = -time.Second }, "negative ttl"},
		{"no issuer", func(o *MintOptions) { o.Issuer = "" }, "issuer"},
		{"no audience", func(o *MintOptions) { o.Audience = "" }, "audience"},
		{"bad pattern", func(o *MintOptions) { o.Publish = []string{"urlpattern:https://example.com/("} }, "matcher"},
		{"empty matcher", func(o *MintOptions) { o.Publish = []string{"exact:"} }, "empty"},
		{"payload not json", func(o *MintOptions) { o.Payload = json.RawMessage(`{`) }, "not valid JSON"},
		{"payload not object", func(o *MintOptions) { o.Payload = json.RawMessage(`[1]`) }, "JSON object"},
		{"payload without subscribe", func(o *MintOptions) { o.Subscribe = nil; o.Publish = []string{"*"}; o.Payload = json.RawMessage(`{}`) }, "subscribe grant"},
		{"legacy bad selector", func(o *MintOptions) { o.Legacy = true; o.Publish = []string{"a\x00"} }, "selector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := ok
			tt.mod(&o)
			if _, err := Mint(o); err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Mint error = %v, want %q", err, tt.err)
			}
		})
	}
	// The exact: prefix spells out topics that look like a prefix.
	tok, err := Mint(MintOptions{Key: secret, TTL: time.Hour, Issuer: tkIssuer, Audience: tkAudience, Publish: []string{"exact:urlpattern:x"}, Now: func() time.Time { return tkNow }})
	if err != nil {
		t.Fatal(err)
	}
	g, err := tkValidator(t, secret, secret, nil).Validate(tok, ActionPublish)
	if err != nil || !g.CanPublish([]string{"urlpattern:x"}) {
		t.Errorf("exact: prefix: %+v, %v", g, err)
	}
}

// TestGrantCacheKeepsItsOwnKey: a token cut from a whole Cookie header is
// cached under a copy of its own, not a slice that keeps the header alive
// while the cache counts only the token.
func TestGrantCacheKeepsItsOwnKey(t *testing.T) {
	var c grantCache
	c.init(hub.NewMatchers(), 1<<20)
	header := "other=" + strings.Repeat("x", 1<<16) + "; token=abc.def.ghi"
	raw := header[strings.LastIndexByte(header, '=')+1:]
	c.put(grantKey{raw: raw, action: ActionSubscribe}, &Grant{Expires: time.Now().Add(time.Hour)})
	if len(c.m) != 1 {
		t.Fatalf("%d entries", len(c.m))
	}
	for k := range c.m {
		if k.raw != raw {
			t.Fatalf("key %q, want %q", k.raw, raw)
		}
		if unsafe.StringData(k.raw) == unsafe.StringData(raw) {
			t.Fatal("the cached key shares the header's memory")
		}
	}
}
