// Package config is the API's configuration, read from environment variables with
// defaults and validated before anything starts.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Config of the API process.
type Config struct {
	APIAddr     string `env:"API_ADDR" envDefault:":8080"`
	AdminAddr   string `env:"ADMIN_ADDR" envDefault:":9090"`
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/todo?sslmode=disable"`
	DBMaxConns  int32  `env:"DB_MAX_CONNS" envDefault:"16"`
	// RequestTimeout bounds the work of one request, database calls included.
	RequestTimeout time.Duration `env:"REQUEST_TIMEOUT" envDefault:"10s"`
	// ShutdownTimeout is how long in-flight requests may finish after SIGTERM; keep it
	// below the pod's termination grace period (30s by default).
	ShutdownTimeout    time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`
	MaxBodyBytes       int64         `env:"MAX_BODY_BYTES" envDefault:"65536"`
	CORSAllowedOrigins []string      `env:"CORS_ALLOWED_ORIGINS" envSeparator:","`
	// IdempotencySweepInterval is how often expired idempotency keys are deleted.
	IdempotencySweepInterval time.Duration `env:"IDEMPOTENCY_SWEEP_INTERVAL" envDefault:"5m"`
	LogLevel                 string        `env:"LOG_LEVEL" envDefault:"info"`
	// OutboxNotify wakes the publisher at commit with pg_notify: auto (probe the
	// database at start: PostgreSQL yes, CockroachDB no), on or off.
	OutboxNotify string `env:"OUTBOX_NOTIFY" envDefault:"auto"`
}

// Load reads the configuration from the environment and validates it.
func Load() (Config, error) {
	return FromMap(nil)
}

// FromMap reads the configuration from environ (the process environment when nil) and
// validates it.
func FromMap(environ map[string]string) (Config, error) {
	opts := env.Options{}
	if environ != nil {
		opts.Environment = environ
	}
	c, err := env.ParseAsWithOptions[Config](opts)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate reports every invalid setting at once.
func (c Config) Validate() error {
	var errs []error
	for _, a := range [][2]string{{"API_ADDR", c.APIAddr}, {"ADMIN_ADDR", c.AdminAddr}} {
		if _, _, err := net.SplitHostPort(a[1]); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", a[0], a[1]))
		}
	}
	if c.APIAddr == c.AdminAddr {
		errs = append(errs, errors.New("API_ADDR and ADMIN_ADDR must differ"))
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		errs = append(errs, fmt.Errorf("DATABASE_URL %s: want a postgres:// URL", sharedpg.Redact(c.DatabaseURL)))
	}
	if c.DBMaxConns < 1 || c.DBMaxConns > 1000 {
		errs = append(errs, fmt.Errorf("DB_MAX_CONNS %d: want 1..1000", c.DBMaxConns))
	}
	if c.RequestTimeout < 100*time.Millisecond || c.RequestTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("REQUEST_TIMEOUT %s: want 100ms..5m", c.RequestTimeout))
	}
	if c.ShutdownTimeout < time.Second || c.ShutdownTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("SHUTDOWN_TIMEOUT %s: want 1s..5m", c.ShutdownTimeout))
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 16<<20 {
		errs = append(errs, fmt.Errorf("MAX_BODY_BYTES %d: want 1024..16777216", c.MaxBodyBytes))
	}
	for _, o := range c.CORSAllowedOrigins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			errs = append(errs, fmt.Errorf("CORS_ALLOWED_ORIGINS entry %q: want * or an http(s):// origin", o))
		}
	}
	if c.IdempotencySweepInterval < time.Second {
		errs = append(errs, fmt.Errorf("IDEMPOTENCY_SWEEP_INTERVAL %s: want at least 1s", c.IdempotencySweepInterval))
	}
	switch c.OutboxNotify {
	case "auto", "on", "off":
	default:
		errs = append(errs, fmt.Errorf("OUTBOX_NOTIFY %q: want auto, on or off", c.OutboxNotify))
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// LogValue is the loggable form of c, with the database password masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("api_addr", c.APIAddr),
		slog.String("admin_addr", c.AdminAddr),
		slog.String("database_url", sharedpg.Redact(c.DatabaseURL)),
		slog.Int("db_max_conns", int(c.DBMaxConns)),
		slog.String("request_timeout", c.RequestTimeout.String()),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.Int64("max_body_bytes", c.MaxBodyBytes),
		slog.Any("cors_allowed_origins", c.CORSAllowedOrigins),
		slog.String("idempotency_sweep_interval", c.IdempotencySweepInterval.String()),
		slog.String("log_level", c.LogLevel),
		slog.String("outbox_notify", c.OutboxNotify),
	)
}
