#!/bin/sh
# Runs the tests of the example modules (chi, echo, gin). Each is a module
# of its own, so that its router never enters herald's go.mod, and
# `go test ./...` at the repository root does not reach it.
set -eu
cd "$(dirname "$0")"
for dir in chi echo gin; do
	echo "ctxguard/examples/$dir"
	(cd "$dir" && ${GO:-go} vet ./... && ${GO:-go} test -count=1 "$@" ./...)
done
