package h2push_test

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/herald-hub/herald/analyzers/h2push"
)

func TestH2Push(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), h2push.Analyzer, "push")
}
