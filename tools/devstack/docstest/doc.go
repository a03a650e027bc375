// Package docstest keeps the operator docs honest: its test runs every `nats` CLI
// recipe in docs/*.md and README.md against a real JetStream server holding a stream
// and events shaped like production's, so a recipe that stops working fails `make test`.
//
// A recipe is a fenced block tagged "sh nats-recipe". Every command line in it starts
// with `nats `; a line `# expect: TEXT` asserts that the previous command printed TEXT.
// Placeholders such as <user_id> are replaced with values from the test's events (see
// the test for the list); an unknown placeholder fails the test, and so does a `nats`
// command in a block without the tag, so no recipe escapes the check.
//
// Each command runs under a pseudo-terminal (util-linux `script`, present on every
// Debian-based machine), as an operator runs it: `nats stream view` refuses to page
// without one.
//
// The nats CLI comes from the Go module proxy (github.com/nats-io/natscli at
// NatsCLIVersion): the test installs it into .cache/bin at the repository root unless
// NATS_CLI names a binary.
package docstest

// NatsCLIVersion is the natscli release the recipes are written and tested against.
const NatsCLIVersion = "v0.5.0"
