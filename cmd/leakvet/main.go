// Command leakvet finds context, goroutine and cgo leaks, and HTTP/2 server
// push, before they reach production.
//
// Standalone, on package patterns:
//
//	leakvet ./...
//	leakvet -json ./...
//	leakvet -fix ./...      # apply the fixes that are safe
//
// Or as go vet's tool, with the standard vet analyzers beside leakvet's:
//
//	go build -o bin/leakvet github.com/herald-hub/herald/cmd/leakvet
//	go vet -vettool=$PWD/bin/leakvet ./...
//
// Each analyzer can be turned off by name (-rootctx=false) or run alone
// (-rootctx). A finding is silenced deliberately with a comment on its
// line, or alone on the line above: //leakvet:ignore <reason>.
package main

import (
	"golang.org/x/tools/go/analysis/multichecker"

	"github.com/herald-hub/herald/analyzers"
)

func main() {
	multichecker.Main(analyzers.All()...)
}
