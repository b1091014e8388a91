package report_test

import (
	"go/ast"
	"testing"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/herald-hub/herald/analyzers/internal/report"
)

// leaks reports every call of a function named leak.
var leaks = &analysis.Analyzer{
	Name: "leaks",
	Doc:  "report calls of leak",
	Run: func(pass *analysis.Pass) (any, error) {
		rep := report.New(pass)
		for _, f := range pass.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok {
					if id, ok := c.Fun.(*ast.Ident); ok && id.Name == "leak" {
						rep.Report(c, "leak called")
					}
				}
				return true
			})
		}
		return nil, nil
	},
}

func TestIgnore(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), leaks, "ignore")
}
