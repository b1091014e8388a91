package mercure_test

import (
	"testing"
	"time"

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
