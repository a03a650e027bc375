# Every target works from a fresh clone on a machine with Go and the PostgreSQL that
# runs on 127.0.0.1:5432; see README.md.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Every package of every workspace module.
PKGS := ./shared/... ./migrations/... ./devstack/... ./deploy/... ./services/api/... ./services/publisher/... ./services/projector/...
GO_TEST_FLAGS ?= -race -count=1 -timeout 15m
FUZZTIME ?= 30s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# The operator tools default to the local stack of `make run` (whose embedded NATS
# listens on 14222); set these to point them at other servers. `make run` itself only
# sees them when set outside make: unset, it starts embedded servers.
TOOLS_ENV := DATABASE_URL="$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/todo?sslmode=disable}" \
	NATS_URL="$${NATS_URL:-nats://127.0.0.1:14222}" \
	MONGODB_URI="$${MONGODB_URI:-mongodb://127.0.0.1:27017/?directConnection=true}"
PROJECTOR := $(TOOLS_ENV) go run ./services/projector/cmd/projector

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every command into ./bin
	@mkdir -p bin
	go build -o bin/ ./services/api/cmd/... ./services/publisher/cmd/... ./services/projector/cmd/... ./migrations/cmd/... ./devstack/cmd/...

.PHONY: run
run: build ## Run the whole system locally (API on http://localhost:8080); Ctrl-C stops it
	./bin/devstack

.PHONY: migrate
migrate: ## Apply the schema to DATABASE_URL
	$(TOOLS_ENV) go run ./migrations/cmd/migrate up

.PHONY: verify
verify: ## Compare PostgreSQL and MongoDB document by document; print every difference, exit 1 on drift
	$(PROJECTOR) verify

.PHONY: resync
resync: ## Re-emit outbox events so the read model is repaired (ARGS="--user ID" or "--todo ID"; default --all)
	$(PROJECTOR) resync $(or $(ARGS),--all)

.PHONY: rebuild
rebuild: ## Fill a fresh read model from the stream, then switch readers to it (ARGS="--database NAME ...")
	$(PROJECTOR) rebuild $(ARGS)

.PHONY: deadletters
deadletters: ## List the dead letters waiting for an operator (redrive: projector deadletters redrive)
	$(PROJECTOR) deadletters list

.PHONY: test
test: ## Run every test (race detector on) against real PostgreSQL, JetStream and FerretDB
	go test $(GO_TEST_FLAGS) $(PKGS)

.PHONY: bench-publisher
bench-publisher: ## Publisher drain rate at batch 1/100/500 beside raw JetStream publish, and outbox-to-stream latency
	cd services/publisher && go test -run '^$$' -bench 'Drain|Latency' -benchtime 1x ./internal/relay/ ./internal/service/

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s)
	@set -e; for pkg in $$(go list $(PKGS)); do \
	  for f in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; go test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

.PHONY: vet
vet: ## go vet and staticcheck on every module
	go vet $(PKGS)
	go run $(STATICCHECK) $(PKGS)

.PHONY: fmt
fmt: ## Format all Go code
	gofmt -w $$(git ls-files '*.go')
