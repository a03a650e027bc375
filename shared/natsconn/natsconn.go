// Package natsconn connects every service to NATS the same way: the credential and TLS
// settings they share (Config), and one Connect with the timeouts and reconnection
// policy of a long-running service.
//
// Authentication, one of:
//   - user and password (or a token) inside NATS_URL: nats://user:password@host:4222;
//   - NATS_CREDS: a decentralized-auth credentials file (user JWT and nkey seed);
//   - NATS_NKEY_SEED: a file holding a user nkey seed (SU...), for servers that list
//     the user's public nkey.
//
// TLS: a tls:// URL, or any of NATS_TLS_CA (verify the server against this CA instead of
// the system roots) and NATS_TLS_CERT with NATS_TLS_KEY (a client certificate, for
// servers that verify clients). The settings name files, never secrets themselves, so
// they can be logged as they are; mount the files from a Kubernetes Secret.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outboxtodo/outboxtodo/shared/envconfig"
)

// Connect connects to the servers of url (comma-separated) with c's credentials and TLS,
// naming the client name on the server. A dial gives up after five seconds; once
// connected, the client reconnects forever, logging each disconnection and
// reconnection to log: while it is away, publishes and fetches fail and the service's
// readiness says so. opts come after these and win: the API adds
// nats.RetryOnFailedConnect so that it starts while NATS is down.
func Connect(url string, c Config, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	auth, err := c.Options()
	if err != nil {
		return nil, err
	}
	all := append(auth, nats.Name(name), nats.Timeout(5*time.Second), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				log.Warn("disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}))
	nc, err := nats.Connect(url, append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	return nc, nil
}

// Config is the credential and TLS part of a service's NATS settings. Services embed
// it in their own config struct.
type Config struct {
	CredsFile string `env:"NATS_CREDS"`
	NkeySeed  string `env:"NATS_NKEY_SEED"`
	TLSCA     string `env:"NATS_TLS_CA"`
	TLSCert   string `env:"NATS_TLS_CERT"`
	TLSKey    string `env:"NATS_TLS_KEY"`
}

// Validate checks that the settings are consistent and their files readable, so a
// typo fails at start with a clear message rather than as an authorization error.
func (c Config) Validate() error {
	var errs []error
	if c.CredsFile != "" && c.NkeySeed != "" {
		errs = append(errs, errors.New("NATS_CREDS and NATS_NKEY_SEED: set at most one"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("NATS_TLS_CERT and NATS_TLS_KEY: set both or neither"))
	}
	for _, f := range []struct{ name, path string }{
		{"NATS_CREDS", c.CredsFile}, {"NATS_NKEY_SEED", c.NkeySeed},
		{"NATS_TLS_CA", c.TLSCA}, {"NATS_TLS_CERT", c.TLSCert}, {"NATS_TLS_KEY", c.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			// The error names the path only: the file's content never reaches a message.
			errs = append(errs, fmt.Errorf("%s %q: %w", f.name, f.path, errors.Unwrap(err)))
		}
	}
	return errors.Join(errs...)
}

// Options are the nats.go options for c. The nkey seed is read here, once.
func (c Config) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NkeySeed != "":
		opt, err := nats.NkeyOptionFromSeed(c.NkeySeed)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_SEED %q: %w", c.NkeySeed, err)
		}
		opts = append(opts, opt)
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// LogValue shows which files are configured (paths are not secrets), as
// envconfig.LogValue does inside a service's config.
func (c Config) LogValue() slog.Value { return envconfig.LogValue(c) }
