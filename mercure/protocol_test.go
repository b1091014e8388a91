package mercure_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
	"github.com/herald-hub/herald/sse"
)

func q(pairs ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		v.Add(pairs[i], pairs[i+1])
	}
	return v.Encode()
}

func TestPublishSubscribeBothDrafts(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true})
		s8 := th.subscribe(q("match", "https://example.com/books/1"), nil)
		s8p := th.subscribe(q("match_urlpattern", "https://example.com/books/:id"), nil)
		s7 := th.subscribe(q("topic", "https://example.com/books/{id}"), nil)
		id := th.mustPublish(q("topic", "https://example.com/books/1", "data", "{\"a\":1}\nline2", "type", "book", "retry", "500"))
		for _, s := range []*stream{s8, s8p, s7} {
			ev := s.next(t)
			if ev.ID != id || ev.Data != "{\"a\":1}\nline2" || ev.Type != "book" || ev.Retry != "500" {
				t.Fatalf("got %+v, id %q", ev, id)
			}
		}
		if ct := s8.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Errorf("Content-Type %q", ct)
		}
		if !strings.Contains(s8.resp.Header.Get("Link"), `rel="mercure"`) {
			t.Errorf("no discovery Link header: %q", s8.resp.Header.Get("Link"))
		}
		if m == http2 && s8.resp.ProtoMajor != 2 {
			t.Errorf("served over HTTP/%d", s8.resp.ProtoMajor)
		}
	})
}

func TestPublishResponse(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, defaults())
		r := th.publish(q("topic", "https://example.com/a", "id", "urn:my-id"))
		if r.status != 200 || r.body != "urn:my-id" || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("%d %q %q", r.status, r.body, r.header.Get("Content-Type"))
		}
		r = th.publish(q("topic", "https://example.com/a"))
		if r.status != 200 || !strings.HasPrefix(r.body, "urn:uuid:") {
			t.Fatalf("generated id: %d %q", r.status, r.body)
		}
		// Unknown fields are ignored.
		if r := th.publish(q("topic", "x", "future", "1")); r.status != 200 {
			t.Fatalf("unknown field: %d %s", r.status, r.body)
		}
		// Near misses of the reserved namespace are ordinary topics.
		for _, topic := range []string{"https://example.com/mercure-news", "/.well-known/mercure-other", "urn:mercure:x", "mercure/x/../../y"} {
			if r := th.publish(q("topic", topic)); r.status != 200 {
				t.Fatalf("%s: %d %s", topic, r.status, r.body)
			}
		}
	})
}

// TestPublishRejects sends every kind of bad publication and checks the
// status, that a message says why, and that nothing was stored.
func TestPublishRejects(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, defaults())
		cases := []struct {
			name   string
			form   string
			status int
		}{
			{"no topic", q("data", "x"), 400},
			{"empty topic", q("topic", ""), 400},
			{"wildcard topic", q("topic", "*"), 400},
			{"wildcard alternate", q("topic", "a", "topic", "*"), 400},
			{"reserved absolute", q("topic", th.url+"/subscriptions/x"), 400},
			{"reserved other host", q("topic", "https://other.example/.well-known/mercure/subscriptions/x"), 400},
			{"reserved relative", q("topic", "/.well-known/mercure"), 400},
			{"reserved encoded", q("topic", "/.well-known/%6Dercure/x"), 400},
			{"reserved dots", q("topic", "/x/../.well-known/mercure/y"), 400},
			{"reserved alternate", q("topic", "ok", "topic", "/.well-known/mercure/subscriptions"), 400},
			{"reserved query-only reference", q("topic", "?x=1"), 400},
			{"reserved fragment-only reference", q("topic", "#f"), 400},
			{"reserved backslashes", q("topic", "https://h.example\\.well-known\\mercure\\x"), 400},
			{"topic with LF", q("topic", "a\nb"), 400},
			{"topic with NUL", q("topic", "a\x00b"), 400},
			{"topic with format char", q("topic", "a\u202Eb"), 400},
			{"topic invalid utf-8", "topic=%FF", 400},
			{"too many topics", strings.Repeat("topic=a&", 9), 413},
			{"topic too long", q("topic", strings.Repeat("a", 513)), 413},
			{"id with #", q("topic", "a", "id", "#1"), 400},
			{"id earliest", q("topic", "a", "id", "earliest"), 400},
			{"id with CR", q("topic", "a", "id", "a\rb"), 400},
			{"id with LF", q("topic", "a", "id", "a\nb"), 400},
			{"id with NUL", q("topic", "a", "id", "a\x00b"), 400},
			{"id with DEL", q("topic", "a", "id", "a\x7fb"), 400},
			{"id with C1", q("topic", "a", "id", "a\u0085b"), 400},
			{"type mercure", q("topic", "a", "type", "mercure"), 400},
			{"type with LF", q("topic", "a", "type", "x\ny"), 400},
			{"retry not digits", q("topic", "a", "retry", "10s"), 400},
			{"retry negative", q("topic", "a", "retry", "-1"), 400},
			{"retry empty", q("topic", "a", "retry", ""), 400},
			{"data invalid utf-8", "topic=a&data=%C3%28", 400},
			{"body too large", q("topic", "a", "data", strings.Repeat("x", 70<<10)), 413},
		}
		for _, c := range cases {
			r := th.publish(c.form)
			if r.status != c.status {
				t.Errorf("%s: got %d %q, want %d", c.name, r.status, r.body, c.status)
			}
			if strings.TrimSpace(r.body) == "" {
				t.Errorf("%s: no message", c.name)
			}
		}
		// Wrong media type.
		r := th.do(http.MethodPost, th.url, "", map[string]string{
			"Authorization": "Bearer " + th.token(mercure.ActionPublish, false, "*"),
			"Content-Type":  "application/json",
		})
		if r.status != http.StatusUnsupportedMediaType {
			t.Errorf("json body: %d", r.status)
		}
		if n := th.engine.HistoryLen(); n != 0 {
			t.Fatalf("%d updates stored by rejected publications", n)
		}
	})
}

func challenge(r response) string { return r.header.Get("WWW-Authenticate") }

func TestPublishAuthorization(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, defaults())
		form := q("topic", "https://example.com/books/1", "topic", "https://example.com/users/1")
		send := func(auth string) response {
			h := map[string]string{}
			if auth != "" {
				h["Authorization"] = auth
			}
			return th.do(http.MethodPost, th.url, form, h)
		}
		// No token: 401 with a challenge that carries no error code.
		r := send("")
		if r.status != 401 || !strings.HasPrefix(challenge(r), "Bearer") || strings.Contains(challenge(r), "error=") ||
			!strings.Contains(challenge(r), `resource_metadata="`) {
			t.Errorf("no token: %d %q", r.status, challenge(r))
		}
		// Malformed Authorization header: 400 invalid_request.
		r = send("Basic abc")
		if r.status != 400 || !strings.Contains(challenge(r), `error="invalid_request"`) {
			t.Errorf("basic auth: %d %q", r.status, challenge(r))
		}
		// Only one topic granted: 403 insufficient_scope, nothing stored.
		r = send("Bearer " + th.token(mercure.ActionPublish, false, "https://example.com/books/1"))
		if r.status != 403 || !strings.Contains(challenge(r), `error="insufficient_scope"`) {
			t.Errorf("partial grant: %d %q", r.status, challenge(r))
		}
		// A subscriber key cannot sign publications.
		r = send("Bearer " + th.token(mercure.ActionSubscribe, false, "*"))
		if r.status != 401 || !strings.Contains(challenge(r), `error="invalid_token"`) {
			t.Errorf("subscriber key: %d %q", r.status, challenge(r))
		}
		if th.engine.HistoryLen() != 0 {
			t.Fatal("rejected publication stored")
		}
		// URL pattern grant covering both topics; draft-07 template grant.
		if r := send("Bearer " + th.token(mercure.ActionPublish, false, "urlpattern:https://example.com/*")); r.status != 200 {
			t.Errorf("urlpattern grant: %d %s", r.status, r.body)
		}
		if r := send("Bearer " + th.token(mercure.ActionPublish, true, "https://example.com/{kind}/{id}")); r.status != 200 {
			t.Errorf("draft-07 template grant: %d %s", r.status, r.body)
		}
		// Lower-case scheme is fine.
		if r := send("bearer " + th.token(mercure.ActionPublish, false, "*")); r.status != 200 {
			t.Errorf("lower-case bearer: %d %s", r.status, r.body)
		}
	})
}

// TestBadTokens covers the token failures a hub must refuse with 401.
func TestBadTokens(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, defaults())
		other, _ := mercure.ParseKey("another-secret-another-secret-0123456", nil)
		mint := func(o mercure.MintOptions) string {
			if o.Key == nil {
				o.Key = th.pubKey
			}
			if o.Issuer == "" {
				o.Issuer = "herald"
			}
			if o.Audience == "" {
				o.Audience = th.url
			}
			if o.TTL == 0 {
				o.TTL = time.Hour
			}
			o.Publish = []string{"*"}
			tok, err := mercure.Mint(o)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		valid := mint(mercure.MintOptions{})
		parts := strings.Split(valid, ".")
		noneHeader := b64(`{"alg":"none","typ":"at+jwt"}`)
		cases := map[string]string{
			"garbage":        "not-a-token",
			"truncated":      parts[0] + "." + parts[1],
			"unsigned":       parts[0] + "." + parts[1] + ".",
			"alg none":       noneHeader + "." + parts[1] + ".",
			"bad signature":  parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])),
			"wrong key":      mint(mercure.MintOptions{Key: other}),
			"expired":        mint(mercure.MintOptions{TTL: time.Hour, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }}),
			"wrong audience": mint(mercure.MintOptions{Audience: "https://other.example/.well-known/mercure"}),
			"wrong issuer":   mint(mercure.MintOptions{Issuer: "someone-else"}),
		}
		for name, tok := range cases {
			r := th.do(http.MethodPost, th.url, q("topic", "a"), map[string]string{"Authorization": "Bearer " + tok})
			if r.status != 401 || !strings.Contains(challenge(r), `error="invalid_token"`) || strings.TrimSpace(r.body) == "" {
				t.Errorf("%s: %d %q %q", name, r.status, challenge(r), r.body)
			}
		}
		if th.engine.HistoryLen() != 0 {
			t.Fatal("publication with a bad token stored")
		}
	})
}

func TestWrongTypWithoutDraft7(t *testing.T) {
	th := newHub(t, http1, options{draft8: true})
	legacy := th.token(mercure.ActionPublish, true, "*")
	r := th.do(http.MethodPost, th.url, q("topic", "a"), map[string]string{"Authorization": "Bearer " + legacy})
	if r.status != 401 || !strings.Contains(challenge(r), "invalid_token") {
		t.Fatalf("draft-07 token on a draft-08 hub: %d %q", r.status, challenge(r))
	}
}

func TestSubscribeRejects(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true})
		cases := []struct {
			name  string
			query string
			hdr   map[string]string
		}{
			{"no matcher", "", nil},
			{"unknown matcher type", q("match_regex", "x"), nil},
			{"reserved prefix any case", q("MATCH_exact", "x"), nil},
			{"matcher prefix", q("matches", "x"), nil},
			{"invalid urlpattern", q("match_urlpattern", "https://example.com/(unclosed"), nil},
			{"too many matchers", strings.Repeat("match=a&", 4) + strings.Repeat("topic=b&", 5) + "match=c", nil},
			{"matcher with LF", q("match", "a\nb"), nil},
			{"matcher with format char", q("match", "a\u200Db"), nil},
			{"matcher too long", q("match", strings.Repeat("a", 3000)), nil},
			{"last_event_id with LF", q("match", "a", "last_event_id", "x\ny"), nil},
			{"lastEventID with NUL", q("topic", "a", "lastEventID", "x\x00"), nil},
			{"empty last_event_id", q("match", "a", "last_event_id", ""), nil},
		}
		for _, c := range cases {
			s, r := th.trySubscribe(http.MethodGet, c.query, "", c.hdr)
			if s != nil {
				s.close()
				t.Errorf("%s: accepted", c.name)
				continue
			}
			if r.status != 400 || strings.TrimSpace(r.body) == "" {
				t.Errorf("%s: %d %q", c.name, r.status, r.body)
			}
		}
		if n := th.hub.Subscribers(); n != 0 {
			t.Fatalf("%d subscribers registered by rejected requests", n)
		}
	})
}

func TestSubscriberTokens(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, defaults()) // not anonymous
		_, r := th.trySubscribe(http.MethodGet, q("match", "a"), "", nil)
		if r.status != 401 || strings.Contains(challenge(r), "error=") {
			t.Errorf("no token: %d %q", r.status, challenge(r))
		}
		_, r = th.trySubscribe(http.MethodGet, q("match", "a"), "", map[string]string{"Authorization": "Bearer x.y.z"})
		if r.status != 401 || !strings.Contains(challenge(r), `error="invalid_token"`) {
			t.Errorf("bad token: %d %q", r.status, challenge(r))
		}
		// A publisher token does not subscribe (different key).
		_, r = th.trySubscribe(http.MethodGet, q("match", "a"), "", map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionPublish, false, "*")})
		if r.status != 401 {
			t.Errorf("publisher token: %d", r.status)
		}
		s := th.subscribe(q("match", "a"), map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, false, "b")})
		th.mustPublish(q("topic", "a", "id", "1"))
		if ev := s.next(t); ev.ID != "1" {
			t.Fatal(ev)
		}
	})
}

// TestPrivateUpdates checks the private rule live and on replay, with
// canonical and alternate topics, for both token forms.
func TestPrivateUpdates(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true})
		bearer := func(legacy bool, grants ...string) map[string]string {
			return map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, legacy, grants...)}
		}
		route := q("match_urlpattern", "https://example.com/books/:id")
		anon := th.subscribe(route, nil)
		books1 := th.subscribe(route, bearer(false, "https://example.com/books/1"))
		user42 := th.subscribe(route, bearer(false, "urlpattern:https://example.com/users/42/*"))
		legacy := th.subscribe(q("topic", "https://example.com/books/{id}"), bearer(true, "https://example.com/users/42/{+rest}"))

		th.mustPublish(q("topic", "https://example.com/books/1", "id", "p1", "private", "on"))
		th.mustPublish(q("topic", "https://example.com/books/2", "id", "p2", "private", ""))
		th.mustPublish(q("topic", "https://example.com/books/3", "topic", "https://example.com/users/42/books/3", "id", "p3", "private", "on"))
		th.mustPublish(q("topic", "https://example.com/books/4", "id", "pub"))

		// A public sentinel every stream gets: what came before it is
		// all that came.
		th.mustPublish(q("topic", "https://example.com/books/5", "id", "sentinel"))
		check := func(name string, s *stream, want ...string) {
			t.Helper()
			want = append(want, "sentinel")
			got := s.ids(t, len(want))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: got %v, want %v", name, got, want)
			}
		}
		check("anonymous", anon, "pub")
		check("books/1 grant", books1, "p1", "pub")
		check("users/42 grant", user42, "p3", "pub")
		check("draft-07 grant", legacy, "p3", "pub")

		// Replay re-evaluates the current token.
		replay := th.subscribe(route+"&last_event_id=earliest", bearer(false, "https://example.com/books/2"))
		check("replay", replay, "p2", "pub")
		anonReplay := th.subscribe(route+"&last_event_id=earliest", nil)
		check("anonymous replay", anonReplay, "pub")
	})
}

func TestResume(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		// Each case on a hub of its own, so that the sentinel it publishes
		// last is in no other case's history.
		newResumeHub := func() *testHub {
			th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true})
			for i := 1; i <= 5; i++ {
				th.mustPublish(q("topic", "t", "id", fmt.Sprint(i)))
			}
			return th
		}
		th := newResumeHub()
		cases := []struct {
			name    string
			query   string
			hdr     map[string]string
			want    []string
			resumed string
		}{
			{"header", q("match", "t"), map[string]string{"Last-Event-ID": "3"}, []string{"4", "5"}, "3"},
			{"query draft-08", q("match", "t", "last_event_id", "2"), nil, []string{"3", "4", "5"}, "2"},
			{"query draft-07", q("topic", "t", "lastEventID", "4"), nil, []string{"5"}, "4"},
			{"header wins", q("match", "t", "last_event_id", "1"), map[string]string{"Last-Event-ID": "4"}, []string{"5"}, "4"},
			{"earliest", q("match", "t", "last_event_id", "earliest"), nil, []string{"1", "2", "3", "4", "5"}, "earliest"},
			{"unknown", q("match", "t", "last_event_id", "nope"), nil, nil, "earliest"},
			{"latest", q("match", "t"), map[string]string{"Last-Event-ID": "5"}, nil, "5"},
		}
		for _, c := range cases {
			th := newResumeHub()
			s := th.subscribe(c.query, c.hdr)
			if got := s.resp.Header.Get("Mercure-Last-Event-ID"); got != c.resumed {
				t.Errorf("%s: Mercure-Last-Event-ID %q, want %q", c.name, got, c.resumed)
			}
			if got := s.resp.Header.Get("Last-Event-ID"); got != c.resumed {
				t.Errorf("%s: Last-Event-ID %q, want %q", c.name, got, c.resumed)
			}
			th.mustPublish(q("topic", "t", "id", "sentinel"))
			want := append(c.want, "sentinel")
			if got := s.ids(t, len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: got %v, want %v", c.name, got, want)
			}
		}
		// No resume asked: no resume header.
		s := th.subscribe(q("match", "t"), nil)
		if _, ok := s.resp.Header["Mercure-Last-Event-Id"]; ok {
			t.Error("Mercure-Last-Event-ID set without a resume request")
		}
		// Duplicate ids resolve to the earliest occurrence.
		th.mustPublish(q("topic", "t", "id", "2"))
		d := th.subscribe(q("match", "t", "last_event_id", "2"), nil)
		if got := d.ids(t, 4); fmt.Sprint(got) != "[3 4 5 2]" {
			t.Errorf("duplicate id: got %v", got)
		}
	})
}

func TestQueryMethod(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true})
		th.mustPublish(q("topic", "a", "id", "1"))
		th.mustPublish(q("topic", "b", "id", "2"))
		th.mustPublish(q("topic", "c", "id", "3"))
		// Matchers from both the query and the body; the query's cursor wins.
		s, r := th.trySubscribe("QUERY", q("match", "a", "last_event_id", "earliest"), q("match", "b", "match", "c", "last_event_id", "2"), nil)
		if s == nil {
			t.Fatalf("QUERY: %d %s", r.status, r.body)
		}
		if got := s.ids(t, 3); fmt.Sprint(got) != "[1 2 3]" {
			t.Fatalf("got %v", got)
		}
		// The body alone may carry the cursor.
		s2, _ := th.trySubscribe("QUERY", "", q("match", "c", "last_event_id", "2"), nil)
		if s2 == nil {
			t.Fatal("QUERY with body cursor refused")
		}
		if got := s2.ids(t, 1); got[0] != "3" {
			t.Fatalf("got %v", got)
		}
		// The body's names obey the same reserved-namespace rule.
		if s3, r := th.trySubscribe("QUERY", "", q("match_nope", "x"), nil); s3 != nil || r.status != 400 {
			t.Fatalf("QUERY with bad matcher: %d", r.status)
		}
	})
}

func TestCookiesAndQueryToken(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, defaults())
		tok8 := th.token(mercure.ActionSubscribe, false, "*")
		tok7 := th.token(mercure.ActionSubscribe, true, "*")
		for name, hdr := range map[string]map[string]string{
			"draft-08 cookie": {"Cookie": mercure.CookieDraft8 + "=" + tok8},
			"draft-07 cookie": {"Cookie": mercure.CookieDraft7 + "=" + tok7},
			"header wins":     {"Authorization": "Bearer " + tok8, "Cookie": mercure.CookieDraft8 + "=garbage"},
		} {
			s, r := th.trySubscribe(http.MethodGet, q("match", "x"), "", hdr)
			if s == nil {
				t.Errorf("%s: %d %s", name, r.status, r.body)
				continue
			}
			s.close()
		}
		s, r := th.trySubscribe(http.MethodGet, q("topic", "x", "authorization", tok7), "", nil)
		if s == nil {
			t.Fatalf("draft-07 authorization query parameter: %d %s", r.status, r.body)
		}
		s.close()
		// A draft-08-only hub does not read tokens from the URL.
		th8 := newHub(t, m, options{draft8: true})
		if s, r := th8.trySubscribe(http.MethodGet, q("match", "x", "authorization", tok8), "", nil); s != nil || r.status != 401 {
			t.Fatalf("draft-08 hub accepted a token in the URL: %d", r.status)
		}
	})
}

func TestCookiePublishNeedsSameOrigin(t *testing.T) {
	th := newHub(t, http1, options{draft7: true, draft8: true, cors: []string{"https://app.example"}})
	cookie := mercure.CookieDraft8 + "=" + th.token(mercure.ActionPublish, false, "*")
	if r := th.do(http.MethodPost, th.url, q("topic", "a"), map[string]string{"Cookie": cookie}); r.status != 403 {
		t.Errorf("no Origin: %d", r.status)
	}
	if r := th.do(http.MethodPost, th.url, q("topic", "a"), map[string]string{"Cookie": cookie, "Origin": "https://evil.example"}); r.status != 403 {
		t.Errorf("foreign Origin: %d", r.status)
	}
	if r := th.do(http.MethodPost, th.url, q("topic", "a"), map[string]string{"Cookie": cookie, "Origin": "https://app.example"}); r.status != 200 {
		t.Errorf("allowed Origin: %d %s", r.status, r.body)
	}
}

func TestCORS(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true, cors: []string{"https://app.example"}})
		s := th.subscribe(q("match", "a"), map[string]string{"Origin": "https://app.example"})
		if s.resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || s.resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("allowed origin: %v", s.resp.Header)
		}
		s2 := th.subscribe(q("match", "a"), map[string]string{"Origin": "https://evil.example"})
		if v := s2.resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("foreign origin reflected: %q", v)
		}
		r := th.do(http.MethodOptions, th.url, "", map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
		if r.status != 204 || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("preflight: %d %v", r.status, r.header)
		}
	})
}

func TestProtectedResourceMetadata(t *testing.T) {
	th := newHub(t, http1, defaults())
	u, _ := url.Parse(th.url)
	r := th.do(http.MethodGet, u.Scheme+"://"+u.Host+"/.well-known/oauth-protected-resource/.well-known/mercure", "", nil)
	var md map[string]any
	if err := json.Unmarshal([]byte(r.body), &md); err != nil || r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if md["resource"] != th.url || md["mercure_cookie"] != mercure.CookieDraft8 {
		t.Fatalf("metadata %v", md)
	}
	// Draft-07-only hubs publish no metadata: that is how clients tell them apart.
	th7 := newHub(t, http1, options{draft7: true})
	if r := th7.do(http.MethodGet, strings.Replace(th7.url, mercure.DefaultPath, "/.well-known/oauth-protected-resource"+mercure.DefaultPath, 1), "", nil); r.status != 404 {
		t.Fatalf("draft-07 hub metadata: %d", r.status)
	}
}

func TestProtocolSwitches(t *testing.T) {
	th8 := newHub(t, http1, options{draft8: true, anonymous: true})
	if s, r := th8.trySubscribe(http.MethodGet, q("topic", "a"), "", nil); s != nil || r.status != 400 {
		t.Errorf("draft-08 hub accepted topic=: %d", r.status)
	}
	th7 := newHub(t, http1, options{draft7: true, anonymous: true})
	if s, r := th7.trySubscribe(http.MethodGet, q("match", "a"), "", nil); s != nil || r.status != 400 {
		t.Errorf("draft-07 hub accepted match=: %d", r.status)
	}
	s := th7.subscribe(q("topic", "a"), map[string]string{"Last-Event-ID": "x"})
	if s.resp.Header.Get("Last-Event-ID") != "earliest" || s.resp.Header.Get("Mercure-Last-Event-ID") != "" {
		t.Errorf("draft-07 hub resume headers: %v", s.resp.Header)
	}
}

func TestStreamClosedAtExpiry(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, defaults())
		tok, err := mercure.Mint(mercure.MintOptions{Key: th.subKey, Subscribe: []string{"*"}, TTL: 1500 * time.Millisecond, Issuer: "herald", Audience: th.url})
		if err != nil {
			t.Fatal(err)
		}
		s := th.subscribe(q("match", "a"), map[string]string{"Authorization": "Bearer " + tok})
		s.ended(t, 5*time.Second)
	})
}

func TestMaxLifetime(t *testing.T) {
	th := newHub(t, http1, options{draft7: true, draft8: true, anonymous: true, maxLifetime: 200 * time.Millisecond})
	s := th.subscribe(q("match", "a"), nil)
	s.ended(t, 5*time.Second)
}

func TestMethodNotAllowed(t *testing.T) {
	th := newHub(t, http1, defaults())
	r := th.do(http.MethodDelete, th.url, "", nil)
	if r.status != 405 || r.header.Get("Allow") == "" {
		t.Fatalf("%d %v", r.status, r.header)
	}
}

// TestSubscribeWhileDraining: a browser must not be told 503, after which
// EventSource never reconnects; it gets an empty stream with a retry hint,
// drawn from 1-5s so that clients do not all come back at once. This holds
// whether the hub or the stream tracker's gate refuses it.
func TestSubscribeWhileDraining(t *testing.T) {
	for _, gate := range []bool{false, true} {
		th := newHub(t, http1, options{draft7: true, draft8: true, anonymous: true})
		if gate {
			// Refused by the tracker's gate, before the hub is asked.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := th.h.Streams().Shutdown(ctx, nil); err != nil {
				t.Fatal(err)
			}
			cancel()
		} else {
			th.hub.EndStreams()
		}
		seen := make(map[string]bool)
		for range 16 {
			r := th.do(http.MethodGet, th.url+"?"+q("match", "a"), "", nil)
			if r.status != 200 || r.header.Get("Content-Type") != "text/event-stream" || !strings.HasPrefix(r.body, ": hub shutting down, reconnect\n") {
				t.Fatalf("gate=%v: %d %q %q", gate, r.status, r.header.Get("Content-Type"), r.body)
			}
			rd := sse.NewReader(strings.NewReader(r.body))
			if ev, err := rd.Next(); err == nil {
				t.Fatalf("gate=%v: refusal dispatched an event %+v", gate, ev)
			}
			if ms, err := strconv.Atoi(rd.Retry()); err != nil || ms < 1000 || ms > 5000 {
				t.Fatalf("gate=%v: retry %q, want 1000-5000 ms", gate, rd.Retry())
			}
			seen[rd.Retry()] = true
		}
		if len(seen) < 2 {
			t.Fatalf("gate=%v: every refusal told the same retry %v", gate, seen)
		}
		// A resuming client is told its cursor stands: nothing was lost.
		r := th.do(http.MethodGet, th.url+"?"+q("match", "a"), "", map[string]string{"Last-Event-ID": "x1"})
		if r.header.Get("Mercure-Last-Event-ID") != "x1" || r.header.Get("Last-Event-ID") != "x1" {
			t.Fatalf("gate=%v: resume headers %v while draining", gate, r.header)
		}
		// Bad input is still refused as such.
		if r := th.do(http.MethodGet, th.url, "", nil); r.status != http.StatusBadRequest {
			t.Fatalf("gate=%v: subscribe without a matcher while draining: %d", gate, r.status)
		}
	}
}

// TestIdleStreamOutlivesWriteTimeout: a write deadline bounds one batch
// only. An idle stream, kept open by heartbeats spaced wider than the
// write timeout, must survive (HTTP/2 resets a stream whose write
// deadline passes, even when idle).
func TestIdleStreamOutlivesWriteTimeout(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true, heartbeat: 300 * time.Millisecond, writeTimeout: 100 * time.Millisecond})
		s := th.subscribe(q("match", "a"), nil)
		th.mustPublish(q("topic", "a", "id", "1"))
		if ev := s.next(t); ev.ID != "1" {
			t.Fatal(ev)
		}
		time.Sleep(900 * time.Millisecond) // idle, with heartbeats
		th.mustPublish(q("topic", "a", "id", "2"))
		if ev := s.next(t); ev.ID != "2" {
			t.Fatal(ev)
		}
	})
}

func TestHugeTemplateIsRefused(t *testing.T) {
	th := newHub(t, http1, options{draft7: true, draft8: true, anonymous: true})
	vars := strings.Repeat("a,", 1001) + "a"
	if s, r := th.trySubscribe(http.MethodGet, q("topic", "https://example.com/{"+vars+"}"), "", nil); s != nil || r.status != 400 {
		t.Fatalf("huge template: %d %s", r.status, r.body)
	}
}

// TestHubAtRoot: a hub whose URL path is "/" reserves "/" and "//..."
// only, as the draft's rule reads, not every topic.
func TestHubAtRoot(t *testing.T) {
	th := newHub(t, http1, options{draft7: true, draft8: true, path: "/"})
	for _, topic := range []string{"https://example.com/books/1", "urn:isbn:1", "books/1"} {
		if r := th.publish(q("topic", topic)); r.status != 200 {
			t.Errorf("%s: %d %s", topic, r.status, r.body)
		}
	}
	for _, topic := range []string{"/", "//x", th.url} {
		if r := th.publish(q("topic", topic)); r.status != 400 {
			t.Errorf("%s: %d, want 400", topic, r.status)
		}
	}
}

// TestDepartedClientIsNoticed: over HTTP/1.1 the stream's connection is
// taken from net/http and nobody reads it; the hub's liveness probe must
// still end the subscription soon after the client closes it.
func TestDepartedClientIsNoticed(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true})
		s := th.subscribe(q("match", "a"), nil)
		if th.hub.Subscribers() != 1 {
			t.Fatal("not registered")
		}
		s.close()
		deadline := time.Now().Add(10 * time.Second)
		for th.hub.Subscribers() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("subscriber still registered 10s after the client left")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestLostHistoryEndsStreams: when the history is replaced (a new epoch),
// open streams end saying why, with a retry in the spread window, and a
// client that resumes with an id of the lost history is told earliest.
func TestLostHistoryEndsStreams(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, options{draft7: true, draft8: true, anonymous: true})
		th.mustPublish(q("topic", "t", "id", "old"))
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		resp := th.send(ctx, http.MethodGet, th.url+"?"+q("match", "t"), "", nil)
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("subscribe: %d", resp.StatusCode)
		}
		th.engine.Reset()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the ended stream: %v", err)
		}
		if !bytes.Contains(body, []byte(": closed: "+hub.ErrLost.Error())) {
			t.Fatalf("stream ended without saying why: %q", body)
		}
		rd := sse.NewReader(bytes.NewReader(body))
		for {
			if _, err := rd.Next(); err != nil {
				break
			}
		}
		if ms, err := strconv.Atoi(rd.Retry()); err != nil || ms < 1000 || ms > 5000 {
			t.Fatalf("retry %q, want 1000-5000", rd.Retry())
		}
		s := th.subscribe(q("match", "t"), map[string]string{"Last-Event-ID": "old"})
		if got := s.resp.Header.Get("Mercure-Last-Event-ID"); got != "earliest" {
			t.Fatalf("resume from the lost history: Mercure-Last-Event-ID %q, want earliest", got)
		}
		th.mustPublish(q("topic", "t", "id", "new"))
		if ev := s.next(t); ev.ID != "new" {
			t.Fatalf("got %q after the history was replaced", ev.ID)
		}
	})
}
