package golangci

import (
	"strings"
	"testing"

	"github.com/golangci/plugin-module-register/register"

	"github.com/herald-hub/herald/analyzers"
)

func TestPlugin(t *testing.T) {
	newPlugin, err := register.GetPlugin("leakvet")
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPlugin(map[string]any{"disable": []any{"h2push"}})
	if err != nil {
		t.Fatal(err)
	}
	as, err := p.BuildAnalyzers()
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != len(analyzers.Leak())-1 {
		t.Errorf("%d analyzers with one disabled, want %d", len(as), len(analyzers.Leak())-1)
	}
	for _, a := range as {
		if a.Name == "h2push" {
			t.Error("h2push was disabled but is built")
		}
	}
	if p.GetLoadMode() != register.LoadModeTypesInfo {
		t.Errorf("load mode %q", p.GetLoadMode())
	}
	if _, err := newPlugin(map[string]any{"disable": []any{"nosuch"}}); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("unknown analyzer name: err = %v", err)
	}
	all, err := newPlugin(nil)
	if err != nil {
		t.Fatal(err)
	}
	if as, _ := all.BuildAnalyzers(); len(as) != len(analyzers.Leak()) {
		t.Errorf("%d analyzers with none disabled, want %d", len(as), len(analyzers.Leak()))
	}
}
