// Package systemtest holds black-box tests of the service binaries: a test builds the
// api, publisher and projector commands, runs them as processes against servers of its
// own (package child starts and stops them as `make run` does), and judges them only
// by what they answer, do and log. It has no code of its own outside its tests.
package systemtest
