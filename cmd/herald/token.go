package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/herald-hub/herald/mercure"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// token prints an access token that herald serve, run with the same key,
// issuer and public URL, accepts.
func token(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "signing key: the hub's secret, a PEM private key, or @file (required)")
	alg := fs.String("alg", "", "signing algorithm (default from the key type)")
	var pub, sub stringList
	fs.Var(&pub, "publish", "topic matcher the token may publish on (repeatable; * for all; urlpattern:PATTERN for a URL pattern)")
	fs.Var(&sub, "subscribe", "topic matcher the token may read private updates of (repeatable)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime; 0 means no exp (draft-07 tokens only)")
	iss := fs.String("iss", "herald", "issuer: the hub's --jwt-issuer")
	aud := fs.String("aud", "http://localhost:3000"+mercure.DefaultPath, "audience: the hub's --public-url")
	subject := fs.String("sub", "", "subject (default herald-cli)")
	legacy := fs.Bool("legacy", false, "draft-07 token with a mercure claim, for hubs and clients of that draft")
	adminGrant := fs.Bool("admin", false, "grant the admin API and console (sign with the hub's publisher key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *key == "" {
		fs.Usage()
		return fmt.Errorf("--key is required")
	}
	var algs []string
	if *alg != "" {
		algs = []string{*alg}
	}
	k, err := mercure.ParseKey(*key, algs)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	if !*legacy && *ttl <= 0 {
		return fmt.Errorf("--ttl must be positive: draft-08 tokens need an expiry")
	}
	tok, err := mercure.Mint(mercure.MintOptions{
		Key:       k,
		Alg:       *alg,
		Publish:   pub,
		Subscribe: sub,
		TTL:       *ttl,
		Issuer:    *iss,
		Audience:  *aud,
		Subject:   *subject,
		Legacy:    *legacy,
		Admin:     *adminGrant,
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
