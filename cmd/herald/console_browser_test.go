package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// consoleState is what the console shows, read from its page.
const consoleStateJS = `JSON.stringify({
  path: location.pathname,
  status: document.getElementById("status").textContent,
  nodes: document.querySelectorAll(".node").length,
  subscribers: [...document.querySelectorAll(".node .figure .value")].map(e => e.textContent),
  subs: [...document.querySelectorAll("#subs li code")].map(e => e.textContent),
  events: [...document.querySelectorAll("#events li pre")].map(e => e.textContent),
  cursor: document.getElementById("sub-cursor").textContent,
  published: document.getElementById("pub-result").textContent,
  overflow: document.documentElement.scrollWidth > window.innerWidth,
})`

type consoleState struct {
	Path        string   `json:"path"`
	Status      string   `json:"status"`
	Nodes       int      `json:"nodes"`
	Subscribers []string `json:"subscribers"`
	Subs        []string `json:"subs"`
	Events      []string `json:"events"`
	Cursor      string   `json:"cursor"`
	Published   string   `json:"published"`
	Overflow    bool     `json:"overflow"`
}

// waitConsole polls the console page until cond holds.
func waitConsole(t *testing.T, ctx context.Context, what string, cond func(consoleState) bool) consoleState {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var s consoleState
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		raw, err := chromedp.Run(tctx, chromedp.Evaluate[string](consoleStateJS))
		cancel()
		if err != nil {
			t.Fatalf("read the console: %v", err)
		}
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			t.Fatalf("console state %q: %v", raw, err)
		}
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s; the console shows %+v", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// screenshotTo is where the console's screenshots go: docs/ when
// HERALD_SCREENSHOTS names it (to refresh the README's pictures), a
// temporary directory otherwise.
func screenshotTo(t *testing.T) string {
	if d := os.Getenv("HERALD_SCREENSHOTS"); d != "" {
		return d
	}
	return t.TempDir()
}

// TestConsoleInBrowser uses the console as a person does, in Chromium, at a
// desktop's width and a phone's: it opens (/ leads there), shows the node
// and the console's own subscription, subscribes to a topic from its pane
// (the subscription appears), publishes from its form, shows the event
// arrive with its id as the resume cursor, and stops (the subscription
// vanishes); nothing is wider than a phone's screen.
func TestConsoleInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is not installed at %s: run `make test`, which installs it: %v", chromiumPath, err)
	}
	work, logs, profile := t.TempDir(), t.TempDir(), t.TempDir()
	addr := freeAddr(t)
	startHub(t, work, logs, addr, "--subscriptions", "--engine", "memory", "--node-name", "herald-1")
	shots := screenshotTo(t)
	ctx := startBrowser(t, profile)

	if err := runBrowser(t, ctx, 20*time.Second,
		chromedp.EmulateViewport(1280, 860),
		chromedp.Navigate("http://"+addr+"/"),
		chromedp.WaitVisible("#nodes .node"),
	); err != nil {
		t.Fatalf("open the console: %v", err)
	}
	s := waitConsole(t, ctx, "the console live, with its own watch among the subscriptions", func(s consoleState) bool {
		return s.Status == "live" && s.Nodes == 1 && len(s.Subs) == 1
	})
	if s.Path != "/console/" {
		t.Fatalf("/ led to %s, want /console/", s.Path)
	}

	const topic = "https://example.com/demo"
	if err := runBrowser(t, ctx, 10*time.Second, chromedp.Click("#sub-start")); err != nil {
		t.Fatal(err)
	}
	waitConsole(t, ctx, "the pane's subscription in the list", func(s consoleState) bool { return contains(s.Subs, topic) })

	const data = `{"title":"Dune","n":1}`
	if err := runBrowser(t, ctx, 10*time.Second,
		chromedp.SetValue("#pub-data", data),
		chromedp.Click("#pub-send"),
	); err != nil {
		t.Fatal(err)
	}
	// The event may come through the pane before the publish's answer
	// is shown: wait for both.
	s = waitConsole(t, ctx, "the published event in the pane, and the publish's answer", func(s consoleState) bool {
		return contains(s.Events, data) && strings.HasPrefix(s.Published, "Published ")
	})
	id := regexp.MustCompile(`urn:uuid:[0-9a-f-]+`).FindString(s.Published)
	if id == "" || s.Cursor != id {
		t.Fatalf("published %q, cursor %q: the cursor must be the event's id", s.Published, s.Cursor)
	}
	if s.Overflow {
		t.Error("the console is wider than the desktop window")
	}
	// The node's figures catch up at their next poll: two subscribers
	// (the console's watch and its pane), one publish.
	waitConsole(t, ctx, "the node's figures", func(s consoleState) bool {
		return len(s.Subscribers) == 4 && s.Subscribers[0] == "2" && s.Subscribers[2] != "0"
	})
	shoot(t, ctx, filepath.Join(shots, "console-desktop.png"))

	if err := runBrowser(t, ctx, 10*time.Second, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	s = waitConsole(t, ctx, "the console at a phone's width", func(s consoleState) bool { return s.Status == "live" })
	if s.Overflow {
		t.Error("the console is wider than a phone's screen")
	}
	shoot(t, ctx, filepath.Join(shots, "console-phone.png"))

	if err := runBrowser(t, ctx, 10*time.Second, chromedp.Click("#sub-stop")); err != nil {
		t.Fatal(err)
	}
	waitConsole(t, ctx, "the pane's subscription gone from the list", func(s consoleState) bool { return !contains(s.Subs, topic) && len(s.Subs) == 1 })
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if strings.TrimSpace(s) == v {
			return true
		}
	}
	return false
}

func shoot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100)) // quality 100 makes a PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
