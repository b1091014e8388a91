package mercure_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herald-hub/herald/hub"
	"github.com/herald-hub/herald/mercure"
	"github.com/herald-hub/herald/sse"
)

// subsOptions turns active subscriptions on, with the grace period given
// (negative: none, so that ends are announced at once).
func subsOptions(grace time.Duration) options {
	o := defaults()
	o.tune = func(c *mercure.Config) {
		c.Subscriptions = true
		c.SubscriptionGrace = grace
		c.MaxMatchers = 8
	}
	return o
}

const subsPrefix = "/.well-known/mercure/subscriptions"

var uuidURN = regexp.MustCompile(`^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// subEvent is a subscription event or document, in either draft's form.
type subEvent struct {
	Context    string          `json:"@context"`
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	MatchType  string          `json:"match_type"`
	Match      string          `json:"match"`
	Topic      string          `json:"topic"`
	Subscriber string          `json:"subscriber"`
	Active     bool            `json:"active"`
	Payload    json.RawMessage `json:"payload"`
}

func decodeSub(t *testing.T, ev sse.Event) subEvent {
	t.Helper()
	var d subEvent
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatalf("event data is not a subscription document: %v\n%s", err, ev.Data)
	}
	return d
}

// enc percent-encodes s as the draft's topic template does: everything
// but unreserved characters.
func enc(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
	}
	return b.String()
}

// watch8 subscribes to every draft-08 subscription event and returns the
// stream past the watcher's own subscription event, and its subscriber id.
func (th *testHub) watch8(t *testing.T) (*stream, string) {
	t.Helper()
	tok := th.token(mercure.ActionSubscribe, false, "urlpattern:"+subsPrefix+"/*")
	s := th.subscribe("match_urlpattern="+url.QueryEscape(subsPrefix+"/*"), map[string]string{"Authorization": "Bearer " + tok})
	own := decodeSub(t, s.next(t))
	if own.Match != subsPrefix+"/*" || !own.Active {
		t.Fatalf("watcher's own event: %+v", own)
	}
	return s, own.Subscriber
}

// Subscription events are kept apart from the application's updates: a
// churn of subscribers far beyond --subscriptions-history pushes none of
// them out of a small history. A subscriber resuming from the oldest
// loses nothing; a watcher of subscription events resuming from the same
// place is told that some were dropped.
func TestSubscriptionEventsKeepHistory(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		o := subsOptions(-1)
		o.retention = hub.Retention{MaxCount: 5, MaxPresence: 4}
		th := newHub(t, m, o)
		for i := range 5 {
			if r := th.publish(fmt.Sprintf("topic=https://example.com/a&id=a%d&data=x", i)); r.status != http.StatusOK {
				t.Fatalf("publish: %d %s", r.status, r.body)
			}
		}
		w, _ := th.watch8(t)
		tok := th.token(mercure.ActionSubscribe, false, "https://example.com/c")
		for range 30 {
			s := th.subscribe("match=https://example.com/c", map[string]string{"Authorization": "Bearer " + tok})
			if d := decodeSub(t, w.next(t)); !d.Active {
				t.Fatalf("begin: %+v", d)
			}
			s.close()
			if d := decodeSub(t, w.next(t)); d.Active {
				t.Fatalf("end: %+v", d)
			}
		}
		if n := th.engine.HistoryLen(); n != 5+4 {
			t.Fatalf("HistoryLen() = %d, want the 5 updates and 4 subscription events", n)
		}

		reader := th.token(mercure.ActionSubscribe, false, "https://example.com/a")
		a := th.subscribe("match=https://example.com/a", map[string]string{"Authorization": "Bearer " + reader, "Last-Event-ID": "a0"})
		if got := a.resp.Header.Get("Mercure-Last-Event-ID"); got != "a0" {
			t.Fatalf("a subscriber to a resumed from %q, want a0", got)
		}
		watcher := th.token(mercure.ActionSubscribe, false, "urlpattern:"+subsPrefix+"/*")
		w2 := th.subscribe("match_urlpattern="+url.QueryEscape(subsPrefix+"/*"), map[string]string{"Authorization": "Bearer " + watcher, "Last-Event-ID": "a0"})
		if got := w2.resp.Header.Get("Mercure-Last-Event-ID"); got != "earliest" {
			t.Fatalf("a watcher of subscription events resumed from %q after 57 were dropped, want earliest", got)
		}
		if r := th.publish("topic=https://example.com/a&id=sentinel&data=x"); r.status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.status, r.body)
		}
		var got []string
		for {
			ev := a.next(t)
			if got = append(got, ev.ID); ev.ID == "sentinel" {
				break
			}
		}
		if fmt.Sprint(got) != "[a1 a2 a3 a4 sentinel]" {
			t.Fatalf("the subscriber to a got %v", got)
		}
	})
}

// Every subscription is announced when it begins and when it ends, with
// the draft-08 document, on the reserved topic, as a private update of
// event type "mercure", under one subscriber identifier per connection.
func TestSubscriptionEventsDraft8(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(-1))
		w, watcher := th.watch8(t)
		if !uuidURN.MatchString(watcher) {
			t.Fatalf("subscriber identifier %q is not a random UUID URN", watcher)
		}

		payload := `{"name":"Ann"}`
		tok, err := mercure.Mint(mercure.MintOptions{Key: th.subKey, TTL: time.Hour, Issuer: "herald", Audience: th.url, Subject: "ann",
			Subscribe: []string{"https://example.com/a", "urlpattern:https://example.com/b/:id"}, Payload: json.RawMessage(payload)})
		if err != nil {
			t.Fatal(err)
		}
		b := th.subscribe("match="+url.QueryEscape("https://example.com/a")+"&match_urlpattern="+url.QueryEscape("https://example.com/b/:id"),
			map[string]string{"Authorization": "Bearer " + tok})
		var subscriber string
		want := []struct{ typ, match string }{{"exact", "https://example.com/a"}, {"urlpattern", "https://example.com/b/:id"}}
		for i, wnt := range want {
			ev := w.next(t)
			if ev.Type != "mercure" {
				t.Fatalf("event type %q, want mercure", ev.Type)
			}
			d := decodeSub(t, ev)
			if i == 0 {
				subscriber = d.Subscriber
			}
			if d.Subscriber != subscriber || subscriber == watcher || !uuidURN.MatchString(subscriber) {
				t.Fatalf("subscriber %q (first %q, watcher %q): one random identifier per connection", d.Subscriber, subscriber, watcher)
			}
			wantID := subsPrefix + "/" + wnt.typ + "/" + enc(wnt.match) + "/" + enc(subscriber)
			if d.ID != wantID || d.Type != "subscription" || d.MatchType != wnt.typ || d.Match != wnt.match || !d.Active || string(d.Payload) != payload {
				t.Fatalf("event %d: %+v\nwant id %s, match %s %s, active, payload %s", i, d, wantID, wnt.typ, wnt.match, payload)
			}
		}

		b.close()
		for i, wnt := range want {
			d := decodeSub(t, w.next(t))
			if d.Subscriber != subscriber || d.MatchType != wnt.typ || d.Match != wnt.match || d.Active {
				t.Fatalf("end event %d: %+v", i, d)
			}
		}
		// Sentinel: the next event is the next subscriber's, nothing came
		// between.
		th.subscribe("match=https://example.com/c", map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, false, "https://example.com/c")})
		if d := decodeSub(t, w.next(t)); d.Match != "https://example.com/c" || !d.Active {
			t.Fatalf("after the end events: %+v", d)
		}
	})
}

// A draft-07 subscription is announced in draft-07's form: topic
// .../subscriptions/{topic}/{subscriber}, a JSON-LD document of type
// Subscription, no event type; draft-07 watchers subscribe with a URI
// template.
func TestSubscriptionEventsDraft7(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(-1))
		tmpl := subsPrefix + "/{topic}/{subscriber}"
		w := th.subscribe("topic="+url.QueryEscape(tmpl), map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, true, tmpl)})
		own := decodeSub(t, w.next(t))
		if own.Topic != tmpl || own.Type != "Subscription" {
			t.Fatalf("watcher's own event: %+v", own)
		}
		tok, err := mercure.Mint(mercure.MintOptions{Key: th.subKey, Legacy: true, Subscribe: []string{"https://example.com/books/{id}"}, Payload: json.RawMessage(`{"role":"reader"}`)})
		if err != nil {
			t.Fatal(err)
		}
		b := th.subscribe("topic="+url.QueryEscape("https://example.com/books/{id}"), map[string]string{"Authorization": "Bearer " + tok})
		ev := w.next(t)
		d := decodeSub(t, ev)
		wantID := subsPrefix + "/" + enc("https://example.com/books/{id}") + "/" + enc(d.Subscriber)
		if ev.Type != "" || d.Context != "https://mercure.rocks/" || d.ID != wantID || d.Type != "Subscription" || d.Topic != "https://example.com/books/{id}" ||
			!d.Active || string(d.Payload) != `{"role":"reader"}` || !uuidURN.MatchString(d.Subscriber) {
			t.Fatalf("event (type %q): %+v, want id %s", ev.Type, d, wantID)
		}
		b.close()
		if e := decodeSub(t, w.next(t)); e.ID != wantID || e.Active {
			t.Fatalf("end event: %+v", e)
		}
	})
}

// Subscription events are private: a subscriber whose token does not
// grant their topics never sees them, whatever it subscribes to.
func TestSubscriptionEventsArePrivate(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(-1))
		tok := th.token(mercure.ActionSubscribe, false, "https://example.com/sentinel")
		s := th.subscribe("match_urlpattern="+url.QueryEscape(subsPrefix+"/*")+"&match=https://example.com/sentinel", map[string]string{"Authorization": "Bearer " + tok})
		th.subscribe("match=https://example.com/x", map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, false, "https://example.com/x")})
		th.mustPublish("topic=https://example.com/sentinel&data=sentinel")
		if ev := s.next(t); ev.Data != "sentinel" {
			t.Fatalf("first event %+v, want the sentinel: a subscription event reached a subscriber without the grant", ev)
		}
	})
}

// Publishers cannot write in the reserved namespace nor use the reserved
// event type: only the hub announces subscriptions.
func TestSubscriptionEventsCannotBeForged(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(-1))
		for _, form := range []string{
			"topic=" + url.QueryEscape(subsPrefix+"/exact/x/y") + "&data=forged",
			"topic=https://example.com/a&type=mercure&data=forged",
		} {
			if r := th.publish(form); r.status != http.StatusBadRequest {
				t.Errorf("publish %s: %d %s, want 400", form, r.status, r.body)
			}
		}
	})
}

// apiGet reads the subscriptions API at path with token.
func (th *testHub) apiGet(path, token string) response {
	th.t.Helper()
	hdr := map[string]string{}
	if token != "" {
		hdr["Authorization"] = "Bearer " + token
	}
	u, _ := url.Parse(th.url)
	u.RawPath, u.Path, u.RawQuery = "", "", ""
	return th.do(http.MethodGet, u.String()+path, "", hdr)
}

type subsCollection struct {
	Context       string     `json:"@context"`
	ID            string     `json:"id"`
	Type          string     `json:"type"`
	LastEventID   string     `json:"lastEventID"`
	Subscriptions []subEvent `json:"subscriptions"`
	Next          string     `json:"next"`
}

var linkCursor = regexp.MustCompile(`rel="mercure"; last-event-id="([^"]+)"; type="mercure"; content-type="application/json"`)

// The subscriptions API lists what is active, in draft-08's form, with the
// cursor from which the events follow: a client that reads the list and
// then subscribes with the cursor misses nothing.
func TestSubscriptionsAPIDraft8(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(-1))
		all := th.token(mercure.ActionSubscribe, false, "urlpattern:"+subsPrefix+"{/*}?")
		sub := func(sub, match string) {
			th.subscribe("match="+url.QueryEscape(match), map[string]string{"Authorization": "Bearer " + th.tokenFor(sub, mercure.ActionSubscribe, false, match)})
		}
		sub("ann", "https://example.com/a")
		sub("bob", "https://example.com/a")
		sub("cid", "https://example.com/b")

		r := th.apiGet(subsPrefix, all)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("collection: %d %s %s", r.status, r.header.Get("Content-Type"), r.body)
		}
		cur := linkCursor.FindStringSubmatch(r.header.Get("Link"))
		if cur == nil {
			t.Fatalf("Link %q carries no last-event-id cursor", r.header.Get("Link"))
		}
		var c subsCollection
		if err := json.Unmarshal([]byte(r.body), &c); err != nil {
			t.Fatal(err)
		}
		if c.ID != subsPrefix || c.Type != "subscriptions" || len(c.Subscriptions) != 3 {
			t.Fatalf("collection: %+v", c)
		}
		for _, d := range c.Subscriptions {
			if d.ID != subsPrefix+"/exact/"+enc(d.Match)+"/"+enc(d.Subscriber) || !d.Active || d.MatchType != "exact" {
				t.Fatalf("document %+v", d)
			}
		}

		// One matcher's collection, then one subscription.
		perMatch := subsPrefix + "/exact/" + enc("https://example.com/a")
		r = th.apiGet(perMatch, all)
		var pm subsCollection
		_ = json.Unmarshal([]byte(r.body), &pm)
		if r.status != http.StatusOK || pm.ID != perMatch || len(pm.Subscriptions) != 2 {
			t.Fatalf("per-matcher collection: %d %+v", r.status, pm)
		}
		one := pm.Subscriptions[0]
		r = th.apiGet(one.ID, all)
		var single subEvent
		_ = json.Unmarshal([]byte(r.body), &single)
		if r.status != http.StatusOK || single.ID != one.ID || single.Subscriber != one.Subscriber || single.Match != one.Match || !single.Active {
			t.Fatalf("single subscription: %d %+v, want %+v", r.status, single, one)
		}
		if linkCursor.FindStringSubmatch(r.header.Get("Link")) == nil {
			t.Fatalf("single subscription without the cursor: Link %q", r.header.Get("Link"))
		}
		// A token granting exactly that path reads it, and nothing else.
		exact := th.token(mercure.ActionSubscribe, false, one.ID)
		if r := th.apiGet(one.ID, exact); r.status != http.StatusOK {
			t.Fatalf("exact grant on the subscription: %d %s", r.status, r.body)
		}
		if r := th.apiGet(subsPrefix, exact); r.status != http.StatusForbidden {
			t.Fatalf("exact grant on another path: %d, want 403", r.status)
		}
		if r := th.apiGet(subsPrefix+"/exact/"+enc("https://example.com/a")+"/"+enc("urn:uuid:00000000-0000-4000-8000-000000000000"), all); r.status != http.StatusNotFound {
			t.Fatalf("unknown subscription: %d, want 404", r.status)
		}

		// Read, then something happens, then follow from the cursor.
		sub("dan", "https://example.com/d")
		follow := th.subscribe("match_urlpattern="+url.QueryEscape(subsPrefix+"/*")+"&last_event_id="+url.QueryEscape(cur[1]),
			map[string]string{"Authorization": "Bearer " + all})
		// The cursor is the last update dispatched when the list was
		// read; a beginning already in the list may come again (its
		// publish was answered before its dispatch), nothing else.
		listed := map[string]bool{}
		for _, d := range c.Subscriptions {
			listed[d.ID] = true
		}
		d := decodeSub(t, follow.next(t))
		for listed[d.ID] && d.Active {
			d = decodeSub(t, follow.next(t))
		}
		if d.Match != "https://example.com/d" || !d.Active {
			t.Fatalf("first event after the cursor and the listed ones: %+v, want dan's subscription", d)
		}
	})
}

// The draft-07 form of the API: JSON-LD, the cursor in lastEventID,
// topic selectors in the paths.
func TestSubscriptionsAPIDraft7(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(-1))
		all := th.token(mercure.ActionSubscribe, true, "*")
		tmpl := "https://example.com/books/{id}"
		th.subscribe("topic="+url.QueryEscape(tmpl), map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, true, tmpl)})
		// A draft-08 subscription is not in draft-07's lists.
		th.subscribe("match=https://example.com/a", map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, false, "https://example.com/a")})

		r := th.apiGet(subsPrefix, all)
		var c subsCollection
		_ = json.Unmarshal([]byte(r.body), &c)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/ld+json" || c.Context != "https://mercure.rocks/" ||
			c.Type != "Subscriptions" || c.LastEventID == "" || len(c.Subscriptions) != 1 || c.Subscriptions[0].Topic != tmpl {
			t.Fatalf("draft-07 collection: %d %s %+v", r.status, r.header.Get("Content-Type"), c)
		}
		d := c.Subscriptions[0]
		r = th.apiGet(subsPrefix+"/"+enc(tmpl), all)
		var pt subsCollection
		_ = json.Unmarshal([]byte(r.body), &pt)
		if r.status != http.StatusOK || len(pt.Subscriptions) != 1 || pt.Subscriptions[0].ID != d.ID || pt.LastEventID == "" {
			t.Fatalf("per-topic collection: %d %+v", r.status, pt)
		}
		r = th.apiGet(d.ID, all)
		var one subEvent
		_ = json.Unmarshal([]byte(r.body), &one)
		if r.status != http.StatusOK || one.ID != d.ID || one.Subscriber != d.Subscriber || !strings.Contains(r.body, `"lastEventID":`) {
			t.Fatalf("single: %d %s", r.status, r.body)
		}
	})
}

// Collections come in pages: limit, after, and next where one follows.
func TestSubscriptionsAPIPages(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(-1))
		all := th.token(mercure.ActionSubscribe, false, "*")
		for _, s := range []string{"a", "b", "c"} {
			th.subscribe("match=https://example.com/"+s, map[string]string{"Authorization": "Bearer " + all})
		}
		var seen []string
		next := subsPrefix + "?limit=2"
		for pages := 0; next != ""; pages++ {
			if pages > 2 {
				t.Fatal("more pages than subscriptions")
			}
			r := th.apiGet(next, all)
			var c subsCollection
			if err := json.Unmarshal([]byte(r.body), &c); err != nil || r.status != http.StatusOK {
				t.Fatalf("%s: %d %s", next, r.status, r.body)
			}
			for _, d := range c.Subscriptions {
				seen = append(seen, d.Match)
			}
			next = c.Next
		}
		if strings.Join(seen, " ") != "https://example.com/a https://example.com/b https://example.com/c" {
			t.Fatalf("pages held %v", seen)
		}
	})
}

// Bad requests to the API get a clear 4xx.
func TestSubscriptionsAPIRefusals(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(-1))
		all := th.token(mercure.ActionSubscribe, false, "*")
		for _, c := range []struct {
			path, token string
			status      int
			says        string
		}{
			{subsPrefix, "", http.StatusUnauthorized, "token is required"},
			{subsPrefix, "not-a-token", http.StatusUnauthorized, ""},
			{subsPrefix, th.token(mercure.ActionSubscribe, false, "https://example.com/a"), http.StatusForbidden, "does not grant"},
			{subsPrefix + "/regex/x/y", all, http.StatusBadRequest, "unknown matcher type"},
			{subsPrefix + "/regex/x", all, http.StatusNotFound, ""},           // a draft-07 single subscription that does not exist
			{subsPrefix + "/exact", all, http.StatusOK, `"subscriptions":[]`}, // one segment: a draft-07 topic's collection, empty
			{subsPrefix + "?limit=100000", all, http.StatusBadRequest, "limit"},
			{subsPrefix + "?limit=0", all, http.StatusBadRequest, "limit"},
			{subsPrefix + "?limit=x", all, http.StatusBadRequest, "limit"},
			{subsPrefix + "/a/b/c/d", all, http.StatusNotFound, ""},
			{subsPrefix + "//x", all, http.StatusNotFound, ""},
		} {
			r := th.apiGet(c.path, c.token)
			if r.status != c.status || !strings.Contains(r.body, c.says) {
				t.Errorf("%s: %d %q, want %d saying %q", c.path, r.status, r.body, c.status, c.says)
			}
		}
		if r := th.do(http.MethodPost, strings.Replace(th.url, mercure.DefaultPath, subsPrefix, 1), "x=1", map[string]string{"Authorization": "Bearer " + all}); r.status != http.StatusMethodNotAllowed {
			t.Errorf("POST: %d, want 405", r.status)
		}
	})
}

// The metadata says the hub has active subscriptions only when it has,
// and without them the API does not exist.
func TestSubscriptionsAdvertised(t *testing.T) {
	for _, on := range []bool{true, false} {
		o := defaults()
		if on {
			o = subsOptions(-1)
		}
		th := newHub(t, http1, o)
		r := th.apiGet("/.well-known/oauth-protected-resource"+mercure.DefaultPath, "")
		if has := strings.Contains(r.body, `"mercure_subscriptions":true`); has != on {
			t.Errorf("subscriptions %v: metadata %s", on, r.body)
		}
		if r := th.apiGet(subsPrefix, th.token(mercure.ActionSubscribe, false, "*")); (r.status == http.StatusOK) != on {
			t.Errorf("subscriptions %v: API answered %d", on, r.status)
		}
	}
}

// A subscriber that comes back within the grace period, with the same
// token subject and matchers, keeps its identifier and nothing is
// announced; one that does not is announced gone once the period is over.
func TestSubscriptionGrace(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		th := newHub(t, m, subsOptions(time.Hour))
		w, _ := th.watch8(t)
		tok := th.tokenFor("ann", mercure.ActionSubscribe, false, "https://example.com/a")
		first := th.subscribe("match=https://example.com/a", map[string]string{"Authorization": "Bearer " + tok})
		joined := decodeSub(t, w.next(t))

		first.close()
		eventually(t, func() bool { return mercure.Parked(th.h) == 1 })
		th.subscribe("match=https://example.com/a", map[string]string{"Authorization": "Bearer " + tok})
		if mercure.Parked(th.h) != 0 {
			t.Fatal("the returning subscriber was not recognized")
		}
		r := th.apiGet(subsPrefix, th.token(mercure.ActionSubscribe, false, "*"))
		var c subsCollection
		_ = json.Unmarshal([]byte(r.body), &c)
		found := false
		for _, d := range c.Subscriptions {
			found = found || d.Subscriber == joined.Subscriber && d.Match == "https://example.com/a"
		}
		if !found {
			t.Fatalf("the returning subscriber lost its identifier %s: %s", joined.Subscriber, r.body)
		}
		// Another subscriber, the sentinel: nothing was announced before it.
		th.subscribe("match=https://example.com/z", map[string]string{"Authorization": "Bearer " + th.token(mercure.ActionSubscribe, false, "https://example.com/z")})
		if d := decodeSub(t, w.next(t)); d.Match != "https://example.com/z" {
			t.Fatalf("event after the return: %+v, want the sentinel's subscription", d)
		}
	})
}

// eventually polls cond for up to five seconds.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A malformed percent-encoding in an API path is refused with a 400, by
// net/http before the handler or by the handler, whichever sees it.
func TestSubscriptionsAPIMalformedPath(t *testing.T) {
	th := newHub(t, http1, subsOptions(-1))
	u, _ := url.Parse(th.url)
	for _, p := range []string{subsPrefix + "/exact/%zz", subsPrefix + "/exact/a%2", subsPrefix + "/%"} {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", p, u.Host, th.token(mercure.ActionSubscribe, false, "*"))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", p, resp.StatusCode, body)
		}
	}
}
