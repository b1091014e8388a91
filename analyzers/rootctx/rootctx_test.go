package rootctx_test

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/herald-hub/herald/analyzers/rootctx"
)

func TestRootCtx(t *testing.T) {
	analysistest.RunWithSuggestedFixes(t, analysistest.TestData(), rootctx.Analyzer, "handlers")
}
