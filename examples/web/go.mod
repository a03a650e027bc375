module github.com/outboxtodo/outboxtodo/examples/web

go 1.26.8

require (
	github.com/outboxtodo/outboxtodo/migrations v0.0.0
	github.com/outboxtodo/outboxtodo/shared v0.0.0
	github.com/outboxtodo/outboxtodo/tools/devstack v0.0.0
)

require (
	github.com/IBM/pgxpoolprometheus v1.1.3 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/pgx/v5 v5.12.0 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/mfridman/interpolate v0.0.2 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/nats-io/nats.go v1.55.0 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/pressly/goose/v3 v3.30.0 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.23.0 // indirect
	github.com/sethvargo/go-retry v0.5.0 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// npm's packages (installed at the repository root, or here when one cannot be hoisted)
// are no Go packages.
ignore ./node_modules

// Resolved from the workspace (go.work); the replacements let this module be tidied
// and built on its own too.
replace (
	github.com/outboxtodo/outboxtodo/migrations => ../../migrations
	github.com/outboxtodo/outboxtodo/shared => ../../shared
	github.com/outboxtodo/outboxtodo/tools/devstack => ../../tools/devstack
)
