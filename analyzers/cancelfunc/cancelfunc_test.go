package cancelfunc_test

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/herald-hub/herald/analyzers/cancelfunc"
)

func TestCancelFunc(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), cancelfunc.Analyzer, "cancels")
}
