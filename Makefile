# Every target works from a fresh clone on a machine with Go and the PostgreSQL that
# runs on 127.0.0.1:5432; see README.md.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Every package of every workspace module.
PKGS := ./shared/... ./migrations/... ./tools/devstack/... ./deploy/... ./services/api/... ./services/publisher/... ./services/projector/... ./tools/chaos/... ./tools/loadgen/... ./examples/web/...
GO_TEST_FLAGS ?= -race -count=1 -timeout 15m
FUZZTIME ?= 30s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# The operator tools default to the local stack of `make run` (whose embedded NATS
# listens on 14222); set these to point them at other servers. `make run` itself only
# sees them when set outside make: unset, it starts embedded servers. With the local
# stack's FerretDB (MONGODB_URI unset), `make rebuild` indexes it in its PostgreSQL
# database (FERRETDB_POSTGRESQL_URL, see docs/DEPLOYMENT.md).
TOOLS_ENV := DATABASE_URL="$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/todo?sslmode=disable}" \
	NATS_URL="$${NATS_URL:-nats://127.0.0.1:14222}" \
	FERRETDB_POSTGRESQL_URL="$${FERRETDB_POSTGRESQL_URL-$$(test -n "$$MONGODB_URI" || echo 'postgres://postgres@127.0.0.1:5432/todo_ferretdb?sslmode=disable')}" \
	MONGODB_URI="$${MONGODB_URI:-mongodb://127.0.0.1:27017/?directConnection=true}"
PROJECTOR := $(TOOLS_ENV) go run ./services/projector/cmd/projector
TODOCTL := $(TOOLS_ENV) go run ./services/api/cmd/todoctl

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every command into ./bin
	@mkdir -p bin
	go build -o bin/ ./services/api/cmd/... ./services/publisher/cmd/... ./services/projector/cmd/... ./migrations/cmd/... ./tools/devstack/cmd/...

.PHONY: run
run: build ## Run the whole system locally (API on http://localhost:8080, open to the app of `make web`); Ctrl-C stops it
	CORS_ALLOWED_ORIGINS="$${CORS_ALLOWED_ORIGINS-http://localhost:5173}" ./bin/devstack

.PHONY: migrate
migrate: ## Apply the schema to DATABASE_URL
	$(TOOLS_ENV) go run ./migrations/cmd/migrate up

.PHONY: verify
verify: ## Compare PostgreSQL and MongoDB document by document; print every difference, exit 1 on drift
	$(TODOCTL) verify

.PHONY: resync
resync: ## Re-emit outbox events so the read model is repaired (ARGS="--user ID" or "--todo ID"; default --all)
	$(TODOCTL) resync $(or $(ARGS),--all)

.PHONY: rebuild
rebuild: ## Fill a fresh read model from the stream, then switch readers to it (ARGS="--database NAME ...")
	$(PROJECTOR) rebuild $(ARGS)

.PHONY: restore-cutover
restore-cutover: ## After restoring the database from a backup, with publishers and projectors stopped: fresh stream and read model, every aggregate re-emitted (ARGS=--yes to act; docs/DEPLOYMENT.md)
	$(TODOCTL) restore-cutover $(ARGS)

.PHONY: deadletters
deadletters: ## List the dead letters waiting for an operator (redrive: projector deadletters redrive)
	$(PROJECTOR) deadletters list

.PHONY: test
test: npm ## Run every test (race detector on) against real PostgreSQL, JetStream and FerretDB, and the web app in headless Chromium
	go test $(GO_TEST_FLAGS) $(PKGS)

# --- TypeScript: the generated client (clients/ts) and the example web app (examples/web)
# One npm workspace at the root; npm ci installs package-lock.json's exact versions and
# writes node_modules/.package-lock.json last, so that file stands for an install that
# is up to date.
.PHONY: npm
npm: node_modules/.package-lock.json ## Install the npm packages of package-lock.json (npm ci), when it changed

node_modules/.package-lock.json: package.json package-lock.json clients/ts/package.json examples/web/package.json
	npm ci

.PHONY: client
client: npm ## Regenerate the TypeScript client's types (clients/ts/src/schema.d.ts) from the API's OpenAPI document
	npm run --workspace clients/ts generate -- ../../services/api/internal/httpapi/openapi.json --output src/schema.d.ts

# --watch=forever: rebuilds on changes, and keeps serving when stdin is not a terminal (esbuild's
# server alone stops when its stdin closes, so `make web &` stopped at once).
.PHONY: web
web: npm ## Serve the example web app on http://localhost:5173, calling the API of `make run` (run both)
	npm run --workspace examples/web build -- --outfile=www/app.js --servedir=www --serve=localhost:5173 --watch=forever

.PHONY: bench-publisher
bench-publisher: ## Publisher drain rate at batch 1/100/500 beside raw JetStream publish, the mark's WAL and the outbox's size, and outbox-to-stream latency
	cd services/publisher && go test -run '^$$' -bench 'Drain|Mark|Latency' -benchtime 1x ./internal/relay/ ./internal/outboxdb/ ./internal/app/

# --- bench: the whole-pipeline benchmark of issues 7 and 10 (loadgen module) --------
# It starts bin/devstack on databases of its own (dropped at the end), on the API port
# 18080, NATS 14322, FerretDB 27117 and admin ports 19090-19092, so `make run` may keep
# running. LOADGEN_* variables tune it (tools/loadgen/internal/bench/config.go).
BENCH_RESULTS ?= bench/results

.PHONY: bench
bench: build bench-loadgen ## Benchmark API, pipeline at 10k and 100k todos, projector and rebuild against raw ceilings (<15 min); writes $(BENCH_RESULTS)/results.{md,json,png}
	LOADGEN_RESULTS_DIR=$(BENCH_RESULTS) LOADGEN_COMMAND="make bench" ./bin/loadgen

.PHONY: bench-loadgen
bench-loadgen: ## Build the load generator and projload into ./bin
	@mkdir -p bin
	go build -o bin/ ./tools/loadgen/cmd/...

.PHONY: bench-smoke
bench-smoke: build bench-loadgen ## A short run of `make bench` with tiny phases and read models, to check the harness
	LOADGEN_RESULTS_DIR=$${TMPDIR:-/tmp}/bench-smoke LOADGEN_PHASE=3s LOADGEN_BASELINE=2s LOADGEN_WARMUP=1s \
	LOADGEN_STEP=3s LOADGEN_STEP_MAX=2 LOADGEN_HOLD=2s LOADGEN_PROFILE=2s LOADGEN_DRAIN_TIMEOUT=30s \
	LOADGEN_SMALL_TODOS=200 LOADGEN_LARGE_TODOS=2000 LOADGEN_TODOS_PER_USER=20 LOADGEN_UPDATE_TODOS=100 \
	LOADGEN_DELETE_TODOS=100 LOADGEN_CEILING_DOCS=500 LOADGEN_CEILING_UPSERTS=100 \
	LOADGEN_APPLY_TIMEOUT=90s LOADGEN_REBUILD_TIMEOUT=90s LOADGEN_DEADLINE=6m \
	LOADGEN_REPLICA_LOAD=10s LOADGEN_REPLICA_BACKLOG=1000 \
	LOADGEN_COMMAND="make bench-smoke" ./bin/loadgen

.PHONY: chaos
chaos: ## Fault run (~5 min): kill services, restart servers under load, then check nothing was lost (CHAOS_* tune it)
	go run ./tools/chaos/cmd/chaos

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
