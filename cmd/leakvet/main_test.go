package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// leaky is a module with one finding for rootctx and one for h2push.
const leaky = `package leaky

import (
	"context"
	"net/http"
	"time"
)

func Handler(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = ctx
	if p, ok := w.(http.Pusher); ok {
		p.Push("/app.js", nil)
	}
}
`

// build compiles leakvet into a temporary directory and writes the leaky
// module beside it.
func build(t *testing.T) (bin, mod string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "leakvet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mod = filepath.Join(dir, "leaky")
	if err := os.Mkdir(mod, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"go.mod": "module example.com/leaky\n\ngo 1.22\n", "leaky.go": leaky}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(mod, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return bin, mod
}

func run(t *testing.T, dir string, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%s: %v\n%s", name, err, out)
	return "", 0
}

func TestStandaloneAndVettool(t *testing.T) {
	bin, mod := build(t)
	want := []string{
		"leaky.go:10:37: context.Background() detaches this work from the request: derive it from r.Context()",
		"leaky.go:14:3: HTTP/2 server push",
	}

	out, code := run(t, mod, bin, "./...")
	if code != 3 {
		t.Errorf("leakvet ./... exited %d, want 3 (findings)\n%s", code, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("leakvet ./... output lacks %q:\n%s", w, out)
		}
	}

	out, code = run(t, mod, "go", "vet", "-vettool="+bin, "./...")
	if code == 0 {
		t.Errorf("go vet -vettool=leakvet exited 0 on a leak\n%s", out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("go vet -vettool=leakvet output lacks %q:\n%s", w, out)
		}
	}

	// One analyzer alone.
	out, _ = run(t, mod, bin, "-h2push", "./...")
	if strings.Contains(out, "context.Background") || !strings.Contains(out, "HTTP/2 server push") {
		t.Errorf("leakvet -h2push reported other analyzers' findings or missed its own:\n%s", out)
	}
}

func TestJSON(t *testing.T) {
	bin, mod := build(t)
	out, _ := run(t, mod, bin, "-json", "./...")
	var tree map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &tree); err != nil {
		t.Fatalf("-json output is not one JSON object: %v\n%s", err, out)
	}
	byAnalyzer := tree["example.com/leaky"]
	for _, name := range []string{"rootctx", "h2push"} {
		if _, ok := byAnalyzer[name]; !ok {
			t.Errorf("-json has no %s findings: %s", name, out)
		}
	}
}

func TestFix(t *testing.T) {
	bin, mod := build(t)
	out, _ := run(t, mod, bin, "-fix", "-rootctx", "./...")
	src, err := os.ReadFile(filepath.Join(mod, "leaky.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "context.WithTimeout(r.Context(), time.Second)") {
		t.Errorf("-fix did not derive the context from the request:\n%s\n%s", out, src)
	}
	if out, code := run(t, mod, bin, "-rootctx", "./..."); code != 0 {
		t.Errorf("after -fix, leakvet -rootctx exited %d:\n%s", code, out)
	}
}
