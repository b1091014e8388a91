package cgofree_test

import (
	"go/build"
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/herald-hub/herald/analyzers/cgofree"
)

func TestCgoFree(t *testing.T) {
	// Without cgo the go command leaves out every file that imports "C",
	// and with them every case: the run would pass having checked nothing.
	if !build.Default.CgoEnabled {
		t.Fatal("cgofree's cases need cgo: run the tests with CGO_ENABLED=1 and a C compiler")
	}
	results := analysistest.Run(t, analysistest.TestData(), cgofree.Analyzer, "cmem", "nocgo")
	n := 0
	for _, r := range results {
		n += len(r.Diagnostics)
	}
	if n < 20 {
		t.Errorf("%d findings in all: the cgo cases were not analysed", n)
	}
}
