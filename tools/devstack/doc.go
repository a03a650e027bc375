// Package devstack starts the servers the services need when no external ones are
// given: an embedded NATS JetStream server and an embedded FerretDB (the MongoDB wire
// protocol over PostgreSQL). Tests use it to get servers of their own on free ports;
// `make run` uses it for the local stack, starting the service binaries through
// package child, as the black-box tests of those binaries in package systemtest do.
// TestEnv gives a test a whole stack of its own (`make run`, bin/devstack) on free
// ports. Production never imports it.
package devstack
