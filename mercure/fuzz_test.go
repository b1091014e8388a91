package mercure_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/engine/memory"
	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
)

// fuzzHub is a handler over a memory engine, driven without a network.
type fuzzHub struct {
	h      *mercure.Handler
	hub    *hub.Hub
	eng    *memory.Engine
	pubTok string
}

func newFuzzHub(f *testing.F) *fuzzHub {
	eng := memory.New(memory.Options{})
	h, err := hub.New(hub.Config{Engine: eng, Heartbeat: -1})
	if err != nil {
		f.Fatal(err)
	}
	const hubURL = "https://hub.example/.well-known/mercure"
	public, _ := url.Parse(hubURL)
	key, _ := mercure.ParseKey(pubSecret, nil)
	v, err := mercure.NewValidator(mercure.TokenConfig{PublisherKey: key, SubscriberKey: key, Issuer: "herald", Audience: hubURL, Draft7: true, Draft8: true, Base: hubURL})
	if err != nil {
		f.Fatal(err)
	}
	handler, err := mercure.New(mercure.Config{Hub: h, Tokens: v, PublicURL: public, Draft7: true, Draft8: true, Anonymous: true,
		MaxBodyBytes: 4096, MaxTopics: 4, MaxMatchers: 4, MaxFieldBytes: 256})
	if err != nil {
		f.Fatal(err)
	}
	tok, err := mercure.Mint(mercure.MintOptions{Key: key, Publish: []string{"*"}, TTL: time.Hour, Issuer: "herald", Audience: hubURL})
	if err != nil {
		f.Fatal(err)
	}
	fh := &fuzzHub{h: handler, hub: h, eng: eng, pubTok: tok}
	f.Cleanup(func() { h.Close(); _ = eng.Close() })
	return fh
}

// FuzzPublishForm posts arbitrary bodies: the answer is 200 with an id, or
// a 4xx with a message, never a 5xx or a panic; a refusal stores nothing.
func FuzzPublishForm(f *testing.F) {
	fh := newFuzzHub(f)
	for _, s := range []string{
		"topic=a&data=x", "topic=a&topic=b&private=on&id=x&type=t&retry=1",
		"topic=%2A", "topic=/.well-known/mercure", "topic=a&id=%23x", "topic=a&id=earliest",
		"topic=a&type=mercure", "topic=a&retry=1a", "topic=a&id=a%0Db", "topic=%FF", "data=x",
		"topic=a;b&&=&%&%4", "topic=+&data=%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		before := fh.eng.HistoryLen()
		req := httptest.NewRequest(http.MethodPost, "https://hub.example/.well-known/mercure", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+fh.pubTok)
		w := httptest.NewRecorder()
		fh.h.ServeHTTP(w, req)
		switch {
		case w.Code == 200:
			if w.Body.Len() == 0 {
				t.Fatal("200 without an id")
			}
		case w.Code >= 400 && w.Code < 500:
			if w.Body.Len() == 0 {
				t.Fatalf("%d without a message", w.Code)
			}
			if fh.eng.HistoryLen() != before {
				t.Fatalf("refused publication (%d) was stored", w.Code)
			}
		default:
			t.Fatalf("status %d for %q", w.Code, body)
		}
	})
}

// FuzzSubscribeRequest sends arbitrary query strings and Last-Event-ID
// values: each is accepted (a stream opens) or refused with a 4xx.
func FuzzSubscribeRequest(f *testing.F) {
	fh := newFuzzHub(f)
	f.Add("match=a", "")
	f.Add("topic=https://example.com/{id}&lastEventID=x", "")
	f.Add("match_urlpattern=https://example.com/:id&last_event_id=earliest", "1")
	f.Add("MATCH_x=1", "")
	f.Add("match=a&last_event_id=%0A", "")
	f.Add("match=a", "\x00")
	f.Add("match_urlpattern=((((", "")
	f.Fuzz(func(t *testing.T, query, lastEventID string) {
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequest(http.MethodGet, "https://hub.example/.well-known/mercure", nil).WithContext(ctx)
		req.URL.RawQuery = query
		if lastEventID != "" {
			req.Header["Last-Event-Id"] = []string{lastEventID}
		}
		w := httptest.NewRecorder()
		cancel() // the stream, if it opens, ends at once
		fh.h.ServeHTTP(w, req)
		if w.Code != 200 && (w.Code < 400 || w.Code >= 500) {
			t.Fatalf("status %d for %q / %q", w.Code, query, lastEventID)
		}
		if w.Code >= 400 && w.Body.Len() == 0 {
			t.Fatalf("%d without a message", w.Code)
		}
		if n := fh.hub.Subscribers(); n != 0 {
			t.Fatalf("%d subscribers left registered", n)
		}
	})
}
