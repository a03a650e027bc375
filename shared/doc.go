// Package shared holds what the services of this repository share: the contract
// between them and the plumbing they need. Each package owns one thing:
//
//   - event: the event envelope, its JSON encoding and schema versions, and the
//     subject scheme of the stream with its partitions.
//   - outbox: the format of the outbox rows the API writes and the publisher drains.
//   - readmodel: the layout and the documents of the MongoDB read model the projector
//     writes and the API reads.
//   - readmodel/ferretindex: the indexes and the setting that keep the read model's
//     lookups indexed on the FerretDB stand-in, for the projector and for the tools
//     and tests that prepare a FerretDB as it does.
//   - drift: the comparison of a read model with the state it must show, for the
//     write side's verify and the projector's tests.
//   - postgres: the pool, the query interface, the transaction helpers (WithTx,
//     WithBatch) and the classification of their errors.
//   - natsconn: the one NATS connect, with the credential and TLS options of every
//     connection.
//   - mongoconn: the one MongoDB connect and its bounded disconnect.
//   - envconfig: reading a service's configuration from the environment, and its
//     start-up dump derived from the struct tags, secrets masked.
//   - process: a service's main: its logger, the shutdown signals, the exit code, the
//     run group of its long-running tasks and HTTP servers that drain on shutdown.
//   - admin: the operator port: liveness, readiness, metrics and pprof.
//   - telemetry: tracing, and the trace context carried between requests, outbox rows,
//     messages and log lines.
//   - redact: the masking of credentials in connection strings.
//   - sharedtest: the helpers the modules' tests share; production code never imports
//     it.
//
// It makes no compatibility promises outside this repository: its API changes together
// with the services that import it. It holds no domain rules and no service config;
// what only the API uses of postgres (WithBatch, the commit-outcome probe) stays here
// beside WithTx, whose retry loop and error classification it shares.
package shared
