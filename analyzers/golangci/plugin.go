// Package golangci offers leakvet's analyzers to golangci-lint as a
// module plugin. Build a golangci-lint that includes it with
// `golangci-lint custom` and a .custom-gcl.yml such as
//
//	version: v2.6.0
//	plugins:
//	  - module: github.com/herald-hub/herald
//	    import: github.com/herald-hub/herald/analyzers/golangci
//	    version: latest
//
// then enable it in .golangci.yml:
//
//	linters:
//	  enable: [leakvet]
//	  settings:
//	    custom:
//	      leakvet:
//	        type: module
//	        description: context, goroutine and cgo leaks
//	        settings:
//	          disable: [h2push]   # optional: analyzers to leave out
package golangci

import (
	"fmt"
	"slices"

	"github.com/golangci/plugin-module-register/register"
	"golang.org/x/tools/go/analysis"

	"github.com/herald-hub/herald/analyzers"
)

func init() { register.Plugin("leakvet", New) }

// Settings are the plugin's settings in .golangci.yml.
type Settings struct {
	// Disable names analyzers to leave out.
	Disable []string `json:"disable"`
}

// Plugin is leakvet as a golangci-lint module plugin.
type Plugin struct{ settings Settings }

// New decodes the settings and checks that every name they give is an
// analyzer of leakvet's.
func New(raw any) (register.LinterPlugin, error) {
	s, err := register.DecodeSettings[Settings](raw)
	if err != nil {
		return nil, fmt.Errorf("leakvet settings: %w", err)
	}
	for _, name := range s.Disable {
		if !slices.ContainsFunc(analyzers.Leak(), func(a *analysis.Analyzer) bool { return a.Name == name }) {
			return nil, fmt.Errorf("leakvet settings: disable: no analyzer named %q", name)
		}
	}
	return &Plugin{settings: s}, nil
}

// BuildAnalyzers returns leakvet's analyzers but the disabled ones.
func (p *Plugin) BuildAnalyzers() ([]*analysis.Analyzer, error) {
	var out []*analysis.Analyzer
	for _, a := range analyzers.Leak() {
		if !slices.Contains(p.settings.Disable, a.Name) {
			out = append(out, a)
		}
	}
	return out, nil
}

// GetLoadMode asks for type information, which every analyzer needs.
func (*Plugin) GetLoadMode() string { return register.LoadModeTypesInfo }
