# herald's one test command is `make test`: it installs what a fresh
# machine lacks (Chromium for the browser test, Redis and nginx for the
# multi-node tests), then runs vet, the race detector over every package
# and over the ctxguard example modules,
# a short run of every fuzz target, a pure-Go build of the binaries, and
# leakvet over herald's own code.

GO        ?= go
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a clean run with "context deadline exceeded" at the deadline
# (go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME  ?= 50000x
PKGS      := ./...

.PHONY: test deps vet build race examples fuzz leakvet lint tidy bench

test: deps vet build race examples fuzz leakvet

deps:
	@./scripts/install-test-deps.sh

vet:
	$(GO) vet $(PKGS)

build:
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/...

race:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# The ctxguard examples with chi, echo and gin are modules of their own,
# which `./...` does not reach.
examples:
	GO=$(GO) ./ctxguard/examples/test.sh -race

# Each fuzz target runs briefly; the seed corpus already runs in `race`.
fuzz:
	@set -e; for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs grep -ho '^func Fuzz[A-Za-z0-9_]*' /dev/null | sort -u | sed 's/^func //'); do \
		pkg=$$(grep -rl --include='*_test.go' "^func $$spec(" . | head -1 | xargs dirname); \
		echo "fuzz $$pkg $$spec"; \
		$(GO) test -run='^$$' -fuzz="^$$spec$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# leakvet checks herald's own code; any finding fails the build.
leakvet:
	$(GO) run ./cmd/leakvet $(PKGS)

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: vet tidy
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) run $(STATICCHECK) ./...

# tidy fails when `go mod tidy` would change go.mod or go.sum.
tidy:
	@bak=$$(mktemp -d); cp go.mod go.sum "$$bak"/; \
	$(GO) mod tidy; \
	if ! cmp -s go.mod "$$bak"/go.mod || ! cmp -s go.sum "$$bak"/go.sum; then \
		cp "$$bak"/go.mod "$$bak"/go.sum .; rm -rf "$$bak"; \
		echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; fi; \
	rm -rf "$$bak"

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./sse/ ./hub/ ./engine/... ./mercure/
