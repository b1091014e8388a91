package mercure

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// maxKeyFileSize bounds what ParseKey reads from an "@path" file: a PEM key or
// certificate is a few KiB, so a larger file is a configuration mistake.
const maxKeyFileSize = 1 << 20

// Algorithms each key type may verify and sign with. The first one is the
// default. An algorithm is only ever accepted for a key of its own family,
// which is what defeats algorithm confusion (an RSA public key used as an
// HMAC secret, for instance).
var (
	tokenAlgsHMAC    = []string{"HS256", "HS384", "HS512"}
	tokenAlgsRSA     = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	tokenAlgsEd25519 = []string{"EdDSA"}
)

// Key is a token key from configuration: the material that verifies tokens,
// the material that signs them when it is private (or an HMAC secret), and
// the signature algorithms allowed with it. A Key is immutable and safe for
// concurrent use; its String never shows secret material.
type Key struct {
	kind   string // "hmac", "rsa", "ecdsa" or "ed25519"
	verify any    // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	sign   any    // []byte, *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey or nil
	algs   []string
	weak   bool
}

// ParseKey reads a key from a configuration value. The value is one of:
//
//   - "@path": the key is read from the file at path (a secret read this way
//     loses one trailing line break, which editors add);
//   - a PEM block (anything containing "-----BEGIN"): "PUBLIC KEY",
//     "PRIVATE KEY", "RSA PUBLIC KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY" or
//     "CERTIFICATE", holding an RSA, ECDSA (P-256, P-384, P-521) or Ed25519
//     key. A public key can only verify; a private key also signs;
//   - anything else: an HMAC secret, used byte for byte. A secret that starts
//     with "@" or contains "-----BEGIN" has to be put in a file.
//
// algs is the allowlist of signature algorithms for the key. Empty means the
// default for the key type: HS256 for a secret, RS256 for RSA, ES256, ES384
// or ES512 for ECDSA by curve, EdDSA for Ed25519. An algorithm of another
// family than the key, or "none", is an error.
func ParseKey(value string, algs []string) (*Key, error) {
	if path, ok := strings.CutPrefix(value, "@"); ok {
		b, err := readKeyFile(path)
		if err != nil {
			return nil, err
		}
		value = string(b)
		if !strings.Contains(value, "-----BEGIN") {
			value = strings.TrimSuffix(value, "\n")
			value = strings.TrimSuffix(value, "\r")
		}
	}
	var k *Key
	var err error
	if strings.Contains(value, "-----BEGIN") {
		// Never fall back to using PEM text as an HMAC secret: a public key
		// is public, so a hub that did so would accept forged tokens.
		k, err = parsePEMKey([]byte(value))
	} else {
		k, err = hmacKey([]byte(value))
	}
	if err != nil {
		return nil, err
	}
	if err := k.allow(algs); err != nil {
		return nil, err
	}
	return k, nil
}

func readKeyFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("read key: empty file name after @")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("read key: %s is larger than %d bytes", path, maxKeyFileSize)
	}
	return b, nil
}

func hmacKey(secret []byte) (*Key, error) {
	if len(secret) == 0 {
		return nil, errors.New("empty key")
	}
	return &Key{kind: "hmac", verify: secret, sign: secret}, nil
}

func parsePEMKey(data []byte) (*Key, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("parse key: invalid PEM block")
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, errors.New("parse key: encrypted PEM keys are not supported")
	}
	var raw any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		raw, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		raw, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "PRIVATE KEY":
		raw, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		raw, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		raw, err = x509.ParseECPrivateKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			raw = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("parse key: unsupported PEM block type %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	return keyFrom(raw)
}

// keyFrom wraps a parsed public or private key.
func keyFrom(raw any) (*Key, error) {
	switch k := raw.(type) {
	case *rsa.PrivateKey:
		pk, err := keyFrom(&k.PublicKey)
		if err != nil {
			return nil, err
		}
		pk.sign = k
		return pk, nil
	case *rsa.PublicKey:
		// crypto/rsa refuses keys under 1024 bits; RFC 7518 asks for 2048.
		if k.N.BitLen() < 1024 {
			return nil, fmt.Errorf("parse key: RSA key of %d bits is too small", k.N.BitLen())
		}
		return &Key{kind: "rsa", verify: k, weak: k.N.BitLen() < 2048}, nil
	case *ecdsa.PrivateKey:
		pk, err := keyFrom(&k.PublicKey)
		if err != nil {
			return nil, err
		}
		pk.sign = k
		return pk, nil
	case *ecdsa.PublicKey:
		if ecdsaAlg(k) == "" {
			return nil, errors.New("parse key: unsupported elliptic curve (want P-256, P-384 or P-521)")
		}
		return &Key{kind: "ecdsa", verify: k}, nil
	case ed25519.PrivateKey:
		return &Key{kind: "ed25519", verify: k.Public().(ed25519.PublicKey), sign: k}, nil
	case ed25519.PublicKey:
		return &Key{kind: "ed25519", verify: k}, nil
	default:
		return nil, fmt.Errorf("parse key: unsupported key type %T", raw)
	}
}

// ecdsaAlg is the one JWS algorithm RFC 7518 pairs with the key's curve.
func ecdsaAlg(k *ecdsa.PublicKey) string {
	switch k.Curve {
	case elliptic.P256():
		return "ES256"
	case elliptic.P384():
		return "ES384"
	case elliptic.P521():
		return "ES512"
	}
	return ""
}

// compatible lists the algorithms the key's family allows.
func (k *Key) compatible() []string {
	switch k.kind {
	case "hmac":
		return tokenAlgsHMAC
	case "rsa":
		return tokenAlgsRSA
	case "ecdsa":
		return []string{ecdsaAlg(k.verify.(*ecdsa.PublicKey))}
	default:
		return tokenAlgsEd25519
	}
}

// allow sets the allowlist, checking every entry against the key family.
func (k *Key) allow(algs []string) error {
	ok := k.compatible()
	if len(algs) == 0 {
		algs = ok[:1]
	}
	k.algs = make([]string, 0, len(algs))
	for _, a := range algs {
		switch {
		case strings.EqualFold(a, "none"):
			return errors.New(`key algorithms: "none" is never allowed`)
		case !slices.Contains(ok, a):
			return fmt.Errorf("key algorithms: %q cannot be used with a %s key (allowed: %s)", a, k.kind, strings.Join(ok, ", "))
		case !slices.Contains(k.algs, a):
			k.algs = append(k.algs, a)
		}
	}
	if k.kind == "hmac" {
		// RFC 7518 section 3.2: the secret must be at least as long as the
		// hash output. Short secrets still work, as with the 0.x reference
		// hub, but the server should warn.
		need := 32
		for _, a := range k.algs {
			switch a {
			case "HS384":
				need = max(need, 48)
			case "HS512":
				need = 64
			}
		}
		k.weak = len(k.verify.([]byte)) < need
	}
	return nil
}

// Algorithms returns the signature algorithms allowed with the key; the first
// is the default for signing.
func (k *Key) Algorithms() []string { return slices.Clone(k.algs) }

// CanSign reports whether the key holds signing material: an HMAC secret or
// a private key.
func (k *Key) CanSign() bool { return k.sign != nil }

// Weak reports whether the key is below the strength RFC 7518 asks for: an
// HMAC secret shorter than its hash output (32 bytes for HS256) or an RSA key
// under 2048 bits. Such keys are accepted for compatibility; the server
// should log a warning.
func (k *Key) Weak() bool { return k.weak }

// Kind returns the key family: "hmac", "rsa", "ecdsa" or "ed25519".
func (k *Key) Kind() string { return k.kind }

// String describes the key without its material, e.g. "ecdsa key (ES256)".
func (k *Key) String() string {
	if k == nil {
		return "no key"
	}
	s := k.kind
	if k.kind != "hmac" && k.sign == nil {
		s += " public"
	}
	return s + " key (" + strings.Join(k.algs, ", ") + ")"
}

// GoString keeps %#v from printing the secret.
func (k *Key) GoString() string { return k.String() }
