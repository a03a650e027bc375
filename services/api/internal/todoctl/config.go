package todoctl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/outboxtodo/outboxtodo/shared/natsconn"
)

// Config is every setting of the tools: where the source of truth, the stream and the
// read model are. Their names and defaults are those of the services that own them.
type Config struct {
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/todo?sslmode=disable"`

	NATSURL string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	// NATS holds the credential files and TLS settings (NATS_CREDS, NATS_NKEY_SEED,
	// NATS_TLS_*); a user and password go in NATS_URL.
	NATS   natsconn.Config
	Stream string `env:"STREAM_NAME" envDefault:"TODO_EVENTS"`
	// MembersBucket is where the projector's replicas heartbeat: restore-cutover refuses
	// to run while it finds one.
	MembersBucket string `env:"MEMBERS_BUCKET" envDefault:"projector-members"`

	MongoURI      string `env:"MONGODB_URI" envDefault:"mongodb://127.0.0.1:27017/?directConnection=true"`
	MongoDatabase string `env:"MONGODB_DATABASE" envDefault:"todo_read"`
	// MongoTimeout bounds server selection and the first ping.
	MongoTimeout time.Duration `env:"MONGODB_TIMEOUT" envDefault:"10s"`
}

// LoadConfig reads the environment and validates it.
func LoadConfig() (Config, error) {
	c, err := env.ParseAs[Config]()
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks every setting and reports all problems at once.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Stream != "", "STREAM_NAME is empty")
	check(c.MembersBucket != "" && !strings.ContainsAny(c.MembersBucket, ".*> \t\r\n"), "MEMBERS_BUCKET %q: want a bucket name", c.MembersBucket)
	check(c.MongoDatabase != "", "MONGODB_DATABASE is empty")
	check(c.MongoTimeout >= 100*time.Millisecond, "MONGODB_TIMEOUT %s: want at least 100ms", c.MongoTimeout)
	if u, err := url.Parse(c.MongoURI); err != nil || (u.Scheme != "mongodb" && u.Scheme != "mongodb+srv") {
		errs = append(errs, errors.New("MONGODB_URI: want a mongodb:// or mongodb+srv:// URI"))
	}
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %w", errors.Join(errs...))
	}
	return nil
}
