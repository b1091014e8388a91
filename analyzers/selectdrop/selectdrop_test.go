package selectdrop_test

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/herald-hub/herald/analyzers/selectdrop"
)

func TestSelectDrop(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), selectdrop.Analyzer, "drops")
}
