// Package natsconn turns the NATS credential and TLS settings every service shares into
// nats.go connection options, so that the API, the publisher and the projector
// authenticate and verify the server the same way.
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

	"github.com/nats-io/nats.go"
)

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

// LogValue shows which files are configured; paths are not secrets.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("creds", c.CredsFile),
		slog.String("nkey_seed", c.NkeySeed),
		slog.String("tls_ca", c.TLSCA),
		slog.String("tls_cert", c.TLSCert),
		slog.String("tls_key", c.TLSKey),
	)
}
