// Package shared holds the contract between the services of this repository (the event
// envelope, the subject scheme, the outbox row format) and the plumbing every service
// needs (process lifecycle, logging, the admin server, problem+json, the transaction
// helper).
//
// It makes no compatibility promises outside this repository: its API changes together
// with the services that import it. It holds no domain rules and no service config.
package shared
