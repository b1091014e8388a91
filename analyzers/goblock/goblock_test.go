package goblock_test

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/herald-hub/herald/analyzers/goblock"
)

func TestGoBlock(t *testing.T) {
	analysistest.RunWithSuggestedFixes(t, analysistest.TestData(), goblock.Analyzer, "leak")
}
