package client_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/herald-hub/herald/client"
)

// TestSubscribeRequest checks the request of a first connection: the
// selectors of each draft, the headers, and the resume point in the
// Last-Event-ID header.
func TestSubscribeRequest(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		drafts(t, func(t *testing.T, draft7 bool) {
			f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
				sseStart(w, map[string]string{"Mercure-Last-Event-ID": "earliest", "Last-Event-ID": "earliest"})
				<-r.Context().Done()
			})
			cfg := f.config()
			cfg.Hub += "?authorization=kept"
			cfg.Draft7, cfg.SubscriberToken = draft7, "sub-token"
			c, err := client.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			o := client.SubscribeOptions{Topics: []string{"https://example.com/a", "https://example.com/{id}"}, LastEventID: "earliest"}
			if !draft7 {
				o.URLPatterns = []string{"https://example.com/books/:id"}
			}
			sub, err := c.Subscribe(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			sub.Close()
			r := f.requests()[0]
			q := r.URL.Query()
			want := map[string][]string{"authorization": {"kept"}}
			if draft7 {
				want["topic"] = o.Topics
			} else {
				want["match"], want["match_urlpattern"] = o.Topics, o.URLPatterns
			}
			for k, v := range want {
				if !slices.Equal(q[k], v) {
					t.Errorf("query %s = %q, want %q", k, q[k], v)
				}
			}
			if len(q) != len(want) {
				t.Errorf("query %v, want only %v", q, want)
			}
			for k, v := range map[string]string{"Accept": "text/event-stream", "Authorization": "Bearer sub-token", "Last-Event-ID": "earliest"} {
				if got := r.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			f.protos.check(t, m)
		})
	})
}

// TestResumeAfterDrop has the hub end the stream after two events and
// checks that the subscription reconnects with Last-Event-ID of the last
// delivered event and reports the connection.
func TestResumeAfterDrop(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
			switch n {
			case 1:
				sseStart(w, nil)
				sseWrite(w, ": hello\n\n"+frame("1", "a")+"event: note\n"+frame("2", "b")+"data: no terminator")
			case 2:
				sseStart(w, map[string]string{"Mercure-Last-Event-ID": r.Header.Get("Last-Event-ID")})
				sseWrite(w, frame("3", "c"))
				<-r.Context().Done()
			default:
				http.Error(w, "unexpected", http.StatusBadRequest)
			}
		})
		c, err := client.New(f.config())
		if err != nil {
			t.Fatal(err)
		}
		var conns connects
		sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}, OnConnect: conns.add})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		want := []client.Event{{ID: "1", Data: "a"}, {ID: "2", Type: "note", Data: "b"}, {ID: "3", Data: "c"}}
		for i, w := range want {
			if ev := next(t, sub); ev != w {
				t.Errorf("event %d: got %+v, want %+v", i, ev, w)
			}
		}
		reqs := f.requests()
		if got := reqs[0].Header.Get("Last-Event-ID"); got != "" {
			t.Errorf("first connection sent Last-Event-ID %q", got)
		}
		if got := reqs[1].Header.Get("Last-Event-ID"); got != "2" {
			t.Errorf("reconnection sent Last-Event-ID %q, want 2", got)
		}
		wantConns := []client.ConnectInfo{{Attempt: 1}, {Attempt: 2, Requested: "2", ResumedFrom: "2"}}
		if got := conns.get(); !slices.Equal(got, wantConns) {
			t.Errorf("OnConnect %+v, want %+v", got, wantConns)
		}
		sub.Close()
		if sub.LastEventID() != "3" || sub.Err() != nil {
			t.Errorf("after Close: LastEventID %q, Err %v", sub.LastEventID(), sub.Err())
		}
		f.protos.check(t, m)
	})
}

// TestLastEventIDIsDelivered checks that the resume point is the last
// event handed to the consumer, not the last one parsed: a consumer that
// does not read holds the subscription on its second event.
func TestLastEventIDIsDelivered(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
			sseStart(w, nil)
			sseWrite(w, frame("1", "a")+frame("2", "b")+frame("3", "c"))
			<-r.Context().Done()
		})
		c, err := client.New(f.config())
		if err != nil {
			t.Fatal(err)
		}
		sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}, Buffer: 1})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "first event buffered", func() bool { return len(sub.Events()) == 1 })
		sub.Close()
		var last string
		for ev := range sub.Events() {
			last = ev.ID
		}
		if last != "1" || sub.LastEventID() != "1" {
			t.Errorf("drained up to %q, LastEventID %q; want 1 and 1", last, sub.LastEventID())
		}
	})
}

// TestPossibleLoss checks that a hub resuming elsewhere than asked is
// reported, from the header of each draft.
func TestPossibleLoss(t *testing.T) {
	cases := []struct {
		name   string
		draft7 bool
		header string
		value  string
		want   client.ConnectInfo
	}{
		{"draft08", false, "Mercure-Last-Event-ID", "earliest", client.ConnectInfo{Attempt: 1, Requested: "gone", ResumedFrom: "earliest", PossibleLoss: true}},
		{"draft08 exact", false, "Mercure-Last-Event-ID", "gone", client.ConnectInfo{Attempt: 1, Requested: "gone", ResumedFrom: "gone"}},
		{"draft08 old hub", false, "Last-Event-ID", "gone", client.ConnectInfo{Attempt: 1, Requested: "gone", ResumedFrom: "gone"}},
		{"draft08 silent hub", false, "X-None", "", client.ConnectInfo{Attempt: 1, Requested: "gone", PossibleLoss: true}},
		{"draft07", true, "Last-Event-ID", "earliest", client.ConnectInfo{Attempt: 1, Requested: "gone", ResumedFrom: "earliest", PossibleLoss: true}},
		{"draft07 ignores draft08 header", true, "Mercure-Last-Event-ID", "gone", client.ConnectInfo{Attempt: 1, Requested: "gone", PossibleLoss: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeHub(t, http1, func(n int, w http.ResponseWriter, r *http.Request) {
				sseStart(w, map[string]string{tc.header: tc.value})
				<-r.Context().Done()
			})
			cfg := f.config()
			cfg.Draft7 = tc.draft7
			c, err := client.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var conns connects
			sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}, LastEventID: "gone", OnConnect: conns.add})
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "OnConnect", func() bool { return len(conns.get()) == 1 })
			sub.Close()
			if got := conns.get()[0]; got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestFirstAttemptFails checks that Subscribe returns the first
// attempt's failure without retrying it.
func TestFirstAttemptFails(t *testing.T) {
	cases := []struct {
		name   string
		handle func(w http.ResponseWriter)
		status int
	}{
		{"401", func(w http.ResponseWriter) {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "bad token", http.StatusUnauthorized)
		}, http.StatusUnauthorized},
		{"400", func(w http.ResponseWriter) { http.Error(w, "missing topic", http.StatusBadRequest) }, http.StatusBadRequest},
		{"503", func(w http.ResponseWriter) { http.Error(w, "busy", http.StatusServiceUnavailable) }, http.StatusServiceUnavailable},
		{"not a stream", func(w http.ResponseWriter) { _, _ = w.Write([]byte("<html>")) }, 0},
	}
	run(t, func(t *testing.T, m mode) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) { tc.handle(w) })
				c, err := client.New(f.config())
				if err != nil {
					t.Fatal(err)
				}
				sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}})
				if sub != nil || err == nil {
					t.Fatalf("got %v, %v", sub, err)
				}
				he, ok := errors.AsType[*client.HubError](err)
				switch {
				case tc.status == 0 && ok:
					t.Errorf("got %v, want a non-HubError", err)
				case tc.status != 0 && (!ok || he.Status != tc.status):
					t.Errorf("got %#v, want status %d", err, tc.status)
				case tc.status == http.StatusUnauthorized && (he.Challenge != `Bearer error="invalid_token"` || he.Message != "bad token"):
					t.Errorf("got %#v", he)
				}
				if n := len(f.requests()); n != 1 {
					t.Errorf("%d requests, want 1", n)
				}
			})
		}
	})
}

// TestReconnectionStatuses checks that 429 and 5xx answers to a
// reconnection are retried and that a 4xx ends the subscription.
func TestReconnectionStatuses(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
			switch n {
			case 1, 4:
				sseStart(w, nil)
				sseWrite(w, frame(string(rune('0'+n)), "x"))
			case 2:
				w.Header().Set("Retry-After", "0")
				http.Error(w, "slow down", http.StatusTooManyRequests)
			case 3:
				http.Error(w, "oops", http.StatusBadGateway)
			default:
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="token expired"`)
				http.Error(w, "token expired", http.StatusUnauthorized)
			}
		})
		c, err := client.New(f.config())
		if err != nil {
			t.Fatal(err)
		}
		var conns connects
		sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"t"}, OnConnect: conns.add})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if ev := next(t, sub); ev.ID != "1" {
			t.Errorf("got %+v", ev)
		}
		if ev := next(t, sub); ev.ID != "4" {
			t.Errorf("got %+v", ev)
		}
		err = ended(t, sub)
		if he, ok := errors.AsType[*client.HubError](err); !ok || he.Status != http.StatusUnauthorized || he.Message != "token expired" {
			t.Errorf("Err = %#v, want the 401", err)
		}
		if got := conns.get(); len(got) != 2 || got[1].Attempt != 4 || got[1].Requested != "1" {
			t.Errorf("OnConnect %+v", got)
		}
		if got := f.requests()[4].Header.Get("Last-Event-ID"); got != "4" {
			t.Errorf("last reconnection sent %q", got)
		}
		if n := len(f.requests()); n != 5 {
			t.Errorf("%d requests, want 5", n)
		}
	})
}

// TestEnd checks that a subscription ends cleanly with its context and
// with Close, including while it waits for a slow consumer or for its
// backoff, and that goleak finds nothing left.
func TestEnd(t *testing.T) {
	run(t, func(t *testing.T, m mode) {
		f := newFakeHub(t, m, func(n int, w http.ResponseWriter, r *http.Request) {
			sseStart(w, nil)
			sseWrite(w, frame("1", "a")+frame("2", "b"))
			if r.URL.Query().Get("match") == "hold" {
				<-r.Context().Done()
			}
		})
		cfg := f.config()
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MinBackoff, cfg.MaxBackoff = time.Hour, time.Hour
		slow, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		closeWithin := func(t *testing.T, s *client.Subscription) {
			t.Helper()
			done := make(chan struct{})
			go func() { s.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not return within 10s")
			}
		}

		t.Run("cancel while streaming", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			sub, err := c.Subscribe(ctx, client.SubscribeOptions{Topics: []string{"hold"}})
			if err != nil {
				t.Fatal(err)
			}
			next(t, sub)
			next(t, sub)
			cancel()
			if err := ended(t, sub); err != nil {
				t.Errorf("Err = %v", err)
			}
			closeWithin(t, sub)
		})
		t.Run("cancel while the consumer lags", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			sub, err := c.Subscribe(ctx, client.SubscribeOptions{Topics: []string{"hold"}, Buffer: 1})
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "buffer full", func() bool { return len(sub.Events()) == 1 })
			cancel()
			if err := ended(t, sub); err != nil {
				t.Errorf("Err = %v", err)
			}
			closeWithin(t, sub)
		})
		t.Run("close while streaming", func(t *testing.T) {
			sub, err := c.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"hold"}})
			if err != nil {
				t.Fatal(err)
			}
			next(t, sub)
			closeWithin(t, sub)
			closeWithin(t, sub) // twice is fine
			if err := ended(t, sub); err != nil {
				t.Errorf("Err = %v", err)
			}
		})
		t.Run("close during backoff", func(t *testing.T) {
			sub, err := slow.Subscribe(t.Context(), client.SubscribeOptions{Topics: []string{"end"}})
			if err != nil {
				t.Fatal(err)
			}
			next(t, sub)
			next(t, sub)
			closeWithin(t, sub)
			if err := sub.Err(); err != nil {
				t.Errorf("Err = %v", err)
			}
		})
		c.CloseIdleConnections()
		slow.CloseIdleConnections()
	})
}

// TestSubscribeOptionsChecked checks what Subscribe refuses before
// sending anything.
func TestSubscribeOptionsChecked(t *testing.T) {
	c, err := client.New(client.Config{Hub: "http://127.0.0.1:1/.well-known/mercure"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(t.Context(), client.SubscribeOptions{}); err == nil {
		t.Error("no selector: accepted")
	}
	c7, err := client.New(client.Config{Hub: "http://127.0.0.1:1/.well-known/mercure", Draft7: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c7.Subscribe(t.Context(), client.SubscribeOptions{URLPatterns: []string{"/books/:id"}}); err == nil {
		t.Error("URL pattern with draft-07: accepted")
	}
	for _, cfg := range []client.Config{
		{Hub: "localhost:3000"},
		{Hub: "ftp://example.com/hub"},
		{Hub: "http://example.com/hub", MinBackoff: time.Second, MaxBackoff: time.Millisecond},
		{Hub: "http://example.com/hub", HTTPClient: &http.Client{Timeout: time.Second}},
	} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
