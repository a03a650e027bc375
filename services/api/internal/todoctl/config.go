package todoctl

import (
	"fmt"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/envconfig"
	"github.com/outboxtodo/outboxtodo/shared/natsconn"
)

// Config is every setting of the tools: where the source of truth, the stream and the
// read model are. Their names and defaults are those of the services that own them.
type Config struct {
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/todo?sslmode=disable" secret:"url"`

	// NATSURL may carry a user and password; NATS has the credential and TLS files.
	NATSURL string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222" secret:"natsurls"`
	NATS    natsconn.Config
	Stream  string `env:"STREAM_NAME" envDefault:"TODO_EVENTS"`
	// MembersBucket is where the projector's replicas heartbeat: restore-cutover refuses
	// to run while it finds one.
	MembersBucket string `env:"MEMBERS_BUCKET" envDefault:"projector-members"`

	MongoURI      string `env:"MONGODB_URI" envDefault:"mongodb://127.0.0.1:27017/?directConnection=true" secret:"url"`
	MongoDatabase string `env:"MONGODB_DATABASE" envDefault:"todo_read"`
	// MongoTimeout bounds server selection and the first ping.
	MongoTimeout time.Duration `env:"MONGODB_TIMEOUT" envDefault:"10s"`
}

// LoadConfig reads the environment. A value the tools cannot use fails where they
// use it; the NATS credential and TLS files are checked at once, with their names.
func LoadConfig() (Config, error) {
	c, err := envconfig.Parse[Config](nil)
	if err == nil {
		err = c.NATS.Validate()
	}
	if err != nil {
		return Config{}, fmt.Errorf("invalid config: %w", err)
	}
	return c, nil
}
