package mercure_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
)

// TestCachedGrantExpires: a token validated once is served from the cache
// only until its exp.
func TestCachedGrantExpires(t *testing.T) {
	key, _ := mercure.ParseKey(pubSecret, nil)
	const aud = "http://localhost:3000/.well-known/mercure"
	now := time.Now()
	clock := func() time.Time { return now }
	v, err := mercure.NewValidator(mercure.TokenConfig{PublisherKey: key, Issuer: "herald", Audience: aud, Draft7: true, Draft8: true, Base: aud, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for _, legacy := range []bool{false, true} {
		tok, err := mercure.Mint(mercure.MintOptions{Key: key, Publish: []string{"*"}, TTL: time.Minute, Issuer: "herald", Audience: aud, Legacy: legacy, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second call is served by the cache
			if _, err := v.Validate(tok, mercure.ActionPublish); err != nil {
				t.Fatalf("legacy=%v: %v", legacy, err)
			}
		}
		if _, err := v.Validate(tok, mercure.ActionSubscribe); err == nil {
			t.Fatalf("legacy=%v: cached publish grant answered a subscribe", legacy)
		}
		now = now.Add(2 * time.Minute)
		if _, err := v.Validate(tok, mercure.ActionPublish); err == nil {
			t.Fatalf("legacy=%v: expired token accepted from the cache", legacy)
		}
		now = now.Add(-2 * time.Minute)
	}
}

func BenchmarkValidate(b *testing.B) {
	key, _ := mercure.ParseKey(pubSecret, nil)
	const aud = "http://localhost:3000/.well-known/mercure"
	tok, _ := mercure.Mint(mercure.MintOptions{Key: key, Publish: []string{"*"}, TTL: time.Hour, Issuer: "herald", Audience: aud})
	b.Run("first-sight", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v, _ := mercure.NewValidator(mercure.TokenConfig{PublisherKey: key, Issuer: "herald", Audience: aud, Draft8: true, Base: aud})
			if _, err := v.Validate(tok, mercure.ActionPublish); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		v, _ := mercure.NewValidator(mercure.TokenConfig{PublisherKey: key, Issuer: "herald", Audience: aud, Draft8: true, Base: aud})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Validate(tok, mercure.ActionPublish); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// cacheValidator returns a validator of subscriber tokens with a shared
// matcher table, a byte budget for its cache and a settable clock.
func cacheValidator(t *testing.T, cacheBytes int) (*mercure.Validator, *hub.Matchers, *mercure.Key, *time.Time) {
	t.Helper()
	key, _ := mercure.ParseKey(subSecret, nil)
	now := time.Now()
	table := hub.NewMatchers()
	v, err := mercure.NewValidator(mercure.TokenConfig{
		SubscriberKey: key, Issuer: "herald", Audience: cacheAud, Draft8: true, Base: cacheAud,
		Matchers: table, CacheBytes: cacheBytes, Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return v, table, key, &now
}

const cacheAud = "http://localhost:3000/.well-known/mercure"

func patternToken(t *testing.T, key *mercure.Key, now *time.Time, sub string, patterns []string) string {
	t.Helper()
	grants := make([]string, len(patterns))
	for i, p := range patterns {
		grants[i] = "urlpattern:" + p
	}
	tok, err := mercure.Mint(mercure.MintOptions{Key: key, Subscribe: grants, TTL: time.Minute, Issuer: "herald", Audience: cacheAud, Subject: sub, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestGrantCacheBytes: tokens whose grants hold many distinct patterns
// fill the cache by bytes, not by count, and it never holds more than its
// budget; the matchers of evicted grants leave the shared table.
func TestGrantCacheBytes(t *testing.T) {
	const budget = 256 << 10
	v, table, key, now := cacheValidator(t, budget)
	for i := range 100 {
		ps := make([]string, 20)
		for j := range ps {
			ps[j] = fmt.Sprintf("https://example.com/t%d/p%d/:id", i, j)
		}
		if _, err := v.Validate(patternToken(t, key, now, fmt.Sprint(i), ps), mercure.ActionSubscribe); err != nil {
			t.Fatal(err)
		}
		if _, b := v.CachedTokens(); b > budget {
			t.Fatalf("after %d tokens the cache holds %d bytes, over its %d", i+1, b, budget)
		}
	}
	n, b := v.CachedTokens()
	// 20 patterns of about 8 KB each: a budget of 256 KiB holds one or two.
	if n < 1 || n > 2 {
		t.Fatalf("%d tokens cached (%d bytes)", n, b)
	}
	if got := table.Len(); got != 20*n {
		t.Fatalf("table holds %d matchers for %d cached grants of 20", got, n)
	}
}

// TestGrantCacheSharesMatchers: many tokens naming the same patterns share
// one compiled copy of each, counted once, so they all fit; expired
// entries give their references back.
func TestGrantCacheSharesMatchers(t *testing.T) {
	const budget = 1 << 20
	v, table, key, now := cacheValidator(t, budget)
	ps := make([]string, 20)
	for j := range ps {
		ps[j] = fmt.Sprintf("https://example.com/shared/p%d/:id", j)
	}
	toks := make([]string, 200)
	var first *mercure.Grant
	for i := range toks {
		toks[i] = patternToken(t, key, now, fmt.Sprint(i), ps)
		g, err := v.Validate(toks[i], mercure.ActionSubscribe)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = g
		}
		for j, m := range g.Subscribe {
			if m != first.Subscribe[j] {
				t.Fatalf("token %d holds its own copy of %q", i, m.Value())
			}
		}
		if !g.CanRead([]string{"https://example.com/shared/p3/x"}) || g.CanRead([]string{"https://example.com/other"}) {
			t.Fatal("a shared grant answers wrong")
		}
	}
	n, b := v.CachedTokens()
	if n != len(toks) || b > budget {
		t.Fatalf("%d of %d tokens cached in %d bytes", n, len(toks), b)
	}
	if table.Len() != len(ps) {
		t.Fatalf("table holds %d matchers, want %d", table.Len(), len(ps))
	}
	// Past exp, each lookup drops its entry; the last one empties the table.
	*now = now.Add(2 * time.Minute)
	for _, tok := range toks {
		if _, err := v.Validate(tok, mercure.ActionSubscribe); err == nil {
			t.Fatal("expired token accepted")
		}
	}
	if n, b := v.CachedTokens(); n != 0 || b != 0 {
		t.Fatalf("after expiry: %d tokens, %d bytes cached", n, b)
	}
	if table.Len() != 0 {
		t.Fatalf("after expiry the table holds %d matchers", table.Len())
	}
}
