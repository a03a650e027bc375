// Package config reads the projector's configuration from environment variables, with
// defaults, and validates it before anything starts. Config logs itself (LogValue)
// through envconfig: every variable by its name, passwords masked by their secret tag.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/outboxtodo/outboxtodo/shared/envconfig"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/natsconn"
)

// Config is every setting of the projector.
type Config struct {
	NATSURL string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222" secret:"natsurls"`
	// NATS holds the credential files and TLS settings (NATS_CREDS, NATS_NKEY_SEED,
	// NATS_TLS_*); a user and password go in NATS_URL.
	NATS          natsconn.Config
	Stream        string `env:"STREAM_NAME" envDefault:"TODO_EVENTS"`
	SubjectPrefix string `env:"SUBJECT_PREFIX" envDefault:"todo.events"`
	Durable       string `env:"CONSUMER_NAME" envDefault:"projector"`
	// MembersBucket is the KV bucket where the replicas agree who consumes which
	// partition (package partition).
	MembersBucket string `env:"MEMBERS_BUCKET" envDefault:"projector-members"`
	// MemberTTL is how long a replica's heartbeat and claims live unrefreshed: a dead
	// replica's partitions move to the others after it (and as long again for the pin).
	MemberTTL time.Duration `env:"MEMBER_TTL" envDefault:"3s"`

	// AckWait is how long a delivered message may stay unacknowledged before
	// JetStream delivers it again (to any replica).
	AckWait time.Duration `env:"ACK_WAIT" envDefault:"30s"`
	// MaxDeliver bounds deliveries of a message: one MongoDB rejects on its last
	// delivery, and one delivered more often (left unsettled that many times), is
	// dead-lettered. The projector counts them; its JetStream durable has no limit.
	// -1 is unlimited.
	MaxDeliver int `env:"MAX_DELIVER" envDefault:"10"`
	// BackOff are the redelivery delays (comma-separated durations); empty uses AckWait
	// for redeliveries and 1s,5s,30s for naks.
	BackOff       []time.Duration `env:"BACKOFF" envSeparator:","`
	MaxAckPending int             `env:"MAX_ACK_PENDING" envDefault:"1000"`
	BatchSize     int             `env:"BATCH_SIZE" envDefault:"100"`
	FetchWait     time.Duration   `env:"FETCH_WAIT" envDefault:"1s"`

	MongoURI      string `env:"MONGODB_URI" envDefault:"mongodb://127.0.0.1:27017/?directConnection=true" secret:"url"`
	MongoDatabase string `env:"MONGODB_DATABASE" envDefault:"todo_read"`
	// MongoTimeout bounds one batch's writes, and server selection.
	MongoTimeout time.Duration `env:"MONGODB_TIMEOUT" envDefault:"10s"`
	// MongoWriteConcern and MongoWriteJournal are the write concern of every write to
	// the read model (see WriteConcern); they override w and journal in MongoURI.
	MongoWriteConcern string `env:"MONGODB_WRITE_CONCERN" envDefault:"majority"`
	MongoWriteJournal bool   `env:"MONGODB_WRITE_JOURNAL" envDefault:"true"`
	// WriteConcurrency bounds MongoDB writes in flight per replica.
	WriteConcurrency int `env:"WRITE_CONCURRENCY" envDefault:"16"`
	// FerretDBPostgreSQLURL is the PostgreSQL database behind a FerretDB v1 read
	// model: when set, the projector creates there the indexes FerretDB's lookups
	// need (package ferretindex). Empty for MongoDB.
	FerretDBPostgreSQLURL string `env:"FERRETDB_POSTGRESQL_URL" secret:"url"`

	AdminAddr     string        `env:"ADMIN_ADDR" envDefault:":9092"`
	StatsInterval time.Duration `env:"STATS_INTERVAL" envDefault:"5s"`
	// ShutdownTimeout is how long the batch in hand may take to finish after SIGTERM;
	// keep it a few seconds below the pod's grace period.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`
}

// Load reads the environment and validates it.
func Load() (Config, error) {
	c, err := envconfig.Parse[Config](nil)
	if err != nil {
		return Config{}, err
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
	check(event.ValidSubjectPrefix(c.SubjectPrefix), "SUBJECT_PREFIX %q is not a subject prefix", c.SubjectPrefix)
	check(c.Durable != "", "CONSUMER_NAME is empty")
	check(c.MembersBucket != "" && !strings.ContainsAny(c.MembersBucket, ".*> \t\r\n"), "MEMBERS_BUCKET %q: want a bucket name", c.MembersBucket)
	check(c.MemberTTL >= time.Second, "MEMBER_TTL %s: want at least 1s", c.MemberTTL)
	check(c.AckWait >= time.Second, "ACK_WAIT %s: want at least 1s", c.AckWait)
	check(c.MaxDeliver == -1 || c.MaxDeliver >= 1, "MAX_DELIVER %d: want -1 or at least 1", c.MaxDeliver)
	for _, d := range c.BackOff {
		check(d > 0, "BACKOFF step %s: want positive", d)
	}
	check(c.MaxAckPending >= c.BatchSize, "MAX_ACK_PENDING %d: want at least BATCH_SIZE %d", c.MaxAckPending, c.BatchSize)
	check(c.BatchSize >= 1 && c.BatchSize <= 1000, "BATCH_SIZE %d: want 1 to 1000", c.BatchSize)
	check(c.FetchWait >= 10*time.Millisecond, "FETCH_WAIT %s: want at least 10ms", c.FetchWait)
	check(c.MongoDatabase != "", "MONGODB_DATABASE is empty")
	if _, err := c.WriteConcern(); err != nil {
		errs = append(errs, err)
	}
	check(c.MongoTimeout >= 100*time.Millisecond, "MONGODB_TIMEOUT %s: want at least 100ms", c.MongoTimeout)
	// A held batch is kept alive with InProgress between attempts of MONGODB_TIMEOUT at
	// most: the redelivery timer must outlast one attempt.
	check(c.MongoTimeout < c.AckWait, "MONGODB_TIMEOUT %s must stay below ACK_WAIT %s", c.MongoTimeout, c.AckWait)
	check(len(c.BackOff) == 0 || c.BackOff[0] > c.MongoTimeout, "the first BACKOFF step must exceed MONGODB_TIMEOUT %s", c.MongoTimeout)
	check(c.WriteConcurrency >= 1 && c.WriteConcurrency <= 256, "WRITE_CONCURRENCY %d: want 1 to 256", c.WriteConcurrency)
	check(c.StatsInterval >= 100*time.Millisecond, "STATS_INTERVAL %s: want at least 100ms", c.StatsInterval)
	check(c.ShutdownTimeout > 0, "SHUTDOWN_TIMEOUT %s: want positive", c.ShutdownTimeout)
	if u, err := url.Parse(c.MongoURI); err != nil || (u.Scheme != "mongodb" && u.Scheme != "mongodb+srv") {
		errs = append(errs, errors.New("MONGODB_URI: want a mongodb:// or mongodb+srv:// URI"))
	}
	if u, err := url.Parse(c.FerretDBPostgreSQLURL); c.FerretDBPostgreSQLURL != "" && (err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql")) {
		errs = append(errs, errors.New("FERRETDB_POSTGRESQL_URL: want empty or a postgres:// URL"))
	}
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// WriteConcern is the read model's write concern: w is "majority" or a number of
// members of at least 1, and j is MongoWriteJournal. The projector acknowledges a
// message once its write is acknowledged, so w:0 (no acknowledgement) is refused: it
// would ack messages whose writes nobody saw succeed. With the default, majority and
// journaled, a write whose message was acked survives a replica-set failover.
func (c Config) WriteConcern() (*writeconcern.WriteConcern, error) {
	journal := c.MongoWriteJournal
	if c.MongoWriteConcern == writeconcern.WCMajority {
		return &writeconcern.WriteConcern{W: writeconcern.WCMajority, Journal: &journal}, nil
	}
	n, err := strconv.Atoi(c.MongoWriteConcern)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("MONGODB_WRITE_CONCERN %q: want majority or a number of members of at least 1", c.MongoWriteConcern)
	}
	return &writeconcern.WriteConcern{W: n, Journal: &journal}, nil
}

// LogValue is the loggable form of c, with passwords masked.
func (c Config) LogValue() slog.Value { return envconfig.LogValue(c) }
