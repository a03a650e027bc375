// Package config is the publisher's configuration, read from environment variables with
// defaults and validated before anything starts. Config logs itself (LogValue) through
// envconfig: every variable by its name, passwords masked by their secret tag.
package config

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/envconfig"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/natsconn"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/redact"
)

// Wake modes.
const (
	WakeAuto   = "auto"   // LISTEN when the database supports it, else poll
	WakeListen = "listen" // require LISTEN/NOTIFY
	WakePoll   = "poll"   // poll only
)

// Config of the publisher process.
type Config struct {
	AdminAddr   string `env:"ADMIN_ADDR" envDefault:":9091"`
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/todo?sslmode=disable" secret:"url"`
	DBMaxConns  int32  `env:"DB_MAX_CONNS" envDefault:"8"`
	NATSURL     string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222" secret:"natsurls"`
	// NATS holds the credential files and TLS settings (NATS_CREDS, NATS_NKEY_SEED,
	// NATS_TLS_*); a user and password go in NATS_URL.
	NATS natsconn.Config

	StreamName    string `env:"STREAM_NAME" envDefault:"TODO_EVENTS"`
	SubjectPrefix string `env:"SUBJECT_PREFIX" envDefault:"todo.events"`
	// StreamReplicas is 1 on one server, 3 in a cluster.
	StreamReplicas int `env:"STREAM_REPLICAS" envDefault:"1"`
	// DuplicateWindow must cover the longest wait before a republish (see Validate).
	DuplicateWindow time.Duration `env:"STREAM_DUPLICATE_WINDOW" envDefault:"5m"`
	// StreamMaxAge 0 keeps messages forever; with StreamMaxMsgsPerSubject the stream is
	// a compacted log holding the latest states of every aggregate.
	StreamMaxAge            time.Duration `env:"STREAM_MAX_AGE" envDefault:"0s"`
	StreamMaxMsgsPerSubject int64         `env:"STREAM_MAX_MSGS_PER_SUBJECT" envDefault:"100"`
	// StreamPartitions is the number of owner partitions the stream's subjects carry:
	// the most projector replicas that can share the work. Fixed once the stream has it.
	StreamPartitions int `env:"STREAM_PARTITIONS" envDefault:"16"`

	// BatchSize is the most rows one drain claims and publishes.
	BatchSize int `env:"BATCH_SIZE" envDefault:"500"`
	// PublishTimeout bounds the wait for every PubAck of a batch.
	PublishTimeout time.Duration `env:"PUBLISH_TIMEOUT" envDefault:"10s"`
	// PollMin is the pause between drains while there is work; idle, it doubles up to
	// PollMax (also the safety net behind notifications).
	PollMin time.Duration `env:"POLL_MIN" envDefault:"10ms"`
	PollMax time.Duration `env:"POLL_MAX" envDefault:"1s"`
	// WakeMode is auto, listen or poll.
	WakeMode string `env:"WAKE_MODE" envDefault:"auto"`

	// ReplicaID names this replica in the lease table; default hostname plus a random
	// suffix, so a restarted pod never inherits its predecessor's leases.
	ReplicaID string `env:"REPLICA_ID"`
	// LeaseTTL is how long a partition lease lasts without renewal; renewals run every
	// third of it. A dead replica's partitions move after at most LeaseTTL.
	LeaseTTL time.Duration `env:"LEASE_TTL" envDefault:"15s"`

	// MaxAttempts failed publishes park a row.
	MaxAttempts int           `env:"MAX_ATTEMPTS" envDefault:"10"`
	BackoffMin  time.Duration `env:"RETRY_BACKOFF_MIN" envDefault:"1s"`
	BackoffMax  time.Duration `env:"RETRY_BACKOFF_MAX" envDefault:"1m"`

	// Retention is how long the records of published events stay in outbox_published.
	Retention       time.Duration `env:"RETENTION" envDefault:"24h"`
	CleanupInterval time.Duration `env:"CLEANUP_INTERVAL" envDefault:"1m"`
	CleanupBatch    int           `env:"CLEANUP_BATCH" envDefault:"1000"`
	// VacuumDeadRows dead tuples in an outbox table make the publisher vacuum it
	// (checked every VacuumInterval; 0 turns it off), see cleanup.Vacuumer.
	VacuumDeadRows int64         `env:"VACUUM_DEAD_ROWS" envDefault:"10000"`
	VacuumInterval time.Duration `env:"VACUUM_INTERVAL" envDefault:"10s"`

	// StatsInterval is how often backlog and parked gauges are refreshed.
	StatsInterval time.Duration `env:"STATS_INTERVAL" envDefault:"5s"`
	// ShutdownTimeout bounds finishing the batch in flight at SIGTERM; keep it below the
	// pod's termination grace period.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"15s"`
}

// Load reads the configuration from the environment and validates it.
func Load() (Config, error) { return FromMap(nil) }

// FromMap reads the configuration from environ (the process environment when nil),
// fills in derived defaults and validates it.
func FromMap(environ map[string]string) (Config, error) {
	c, err := envconfig.Parse[Config](environ)
	if err != nil {
		return Config{}, err
	}
	if c.ReplicaID == "" {
		c.ReplicaID = defaultReplicaID()
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// MaxRepublishDelay is the longest a row whose publish may have reached the stream can
// wait before it is published again: a lost lease (LeaseTTL) before another replica
// takes the partition, the longest backoff after a failed (perhaps stored) publish,
// and the PubAck wait of the batch itself. The duplicate window must cover it for the
// republish to be dropped by the server.
func (c Config) MaxRepublishDelay() time.Duration {
	return c.LeaseTTL + c.BackoffMax + c.PublishTimeout
}

// Validate reports every invalid setting at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	c.validateConnections(add)
	c.validateStream(add)
	c.validateRelay(add)
	c.validateHousekeeping(add)
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// report records one invalid setting, worded as by fmt.Errorf.
type report func(format string, args ...any)

// validateConnections checks the admin listener, the database and NATS.
func (c Config) validateConnections(add report) {
	if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
		add("ADMIN_ADDR %q: want host:port", c.AdminAddr)
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		add("DATABASE_URL %s: want a postgres:// URL", sharedpg.Redact(c.DatabaseURL))
	}
	if c.DBMaxConns < 3 || c.DBMaxConns > 1000 {
		add("DB_MAX_CONNS %d: want 3..1000 (drain, leases and cleanup run at once)", c.DBMaxConns)
	}
	for _, u := range strings.Split(c.NATSURL, ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Host == "" {
			add("NATS_URL %q: want nats://host:port[,nats://host:port...]", redact.NATSURLs(c.NATSURL))
			break
		}
	}
}

// validateStream checks the stream the publisher creates or updates.
func (c Config) validateStream(add report) {
	if c.StreamName == "" || strings.ContainsAny(c.StreamName, ".*> \t\r\n/\\") {
		add("STREAM_NAME %q: want a name without whitespace, '.', '*', '>' or slashes", c.StreamName)
	}
	if !event.ValidSubjectPrefix(c.SubjectPrefix) {
		add("SUBJECT_PREFIX %q: want dot-separated tokens without wildcards", c.SubjectPrefix)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		add("STREAM_REPLICAS %d: want 1..5", c.StreamReplicas)
	}
	if c.StreamMaxAge < 0 {
		add("STREAM_MAX_AGE %s: want 0 (no limit) or more", c.StreamMaxAge)
	}
	if c.StreamMaxAge > 0 && c.StreamMaxAge < c.DuplicateWindow {
		add("STREAM_MAX_AGE %s: want 0 or at least STREAM_DUPLICATE_WINDOW %s", c.StreamMaxAge, c.DuplicateWindow)
	}
	if !event.ValidPartitions(c.StreamPartitions) {
		add("STREAM_PARTITIONS %d: want 1..1024", c.StreamPartitions)
	}
	if c.StreamMaxMsgsPerSubject < 1 && c.StreamMaxMsgsPerSubject != -1 {
		add("STREAM_MAX_MSGS_PER_SUBJECT %d: want at least 1, or -1 for no limit", c.StreamMaxMsgsPerSubject)
	}
	if c.DuplicateWindow < time.Second {
		add("STREAM_DUPLICATE_WINDOW %s: want at least 1s", c.DuplicateWindow)
	} else if d := c.MaxRepublishDelay(); c.DuplicateWindow < d {
		add("STREAM_DUPLICATE_WINDOW %s: want at least LEASE_TTL + RETRY_BACKOFF_MAX + PUBLISH_TIMEOUT = %s", c.DuplicateWindow, d)
	}
}

// validateRelay checks batches, polling, wake-ups, leases and retries.
func (c Config) validateRelay(add report) {
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		add("BATCH_SIZE %d: want 1..10000", c.BatchSize)
	}
	if c.PublishTimeout < 100*time.Millisecond || c.PublishTimeout > 5*time.Minute {
		add("PUBLISH_TIMEOUT %s: want 100ms..5m", c.PublishTimeout)
	}
	if c.PollMin < time.Millisecond || c.PollMax < c.PollMin || c.PollMax > 10*time.Minute {
		add("POLL_MIN %s, POLL_MAX %s: want 1ms <= POLL_MIN <= POLL_MAX <= 10m", c.PollMin, c.PollMax)
	}
	switch c.WakeMode {
	case WakeAuto, WakeListen, WakePoll:
	default:
		add("WAKE_MODE %q: want auto, listen or poll", c.WakeMode)
	}
	if c.ReplicaID == "" || len(c.ReplicaID) > 200 {
		add("REPLICA_ID %q: want 1..200 characters", c.ReplicaID)
	}
	if c.LeaseTTL < 300*time.Millisecond || c.LeaseTTL > 10*time.Minute {
		add("LEASE_TTL %s: want 300ms..10m", c.LeaseTTL)
	}
	if c.MaxAttempts < 1 {
		add("MAX_ATTEMPTS %d: want at least 1", c.MaxAttempts)
	}
	if c.BackoffMin < time.Millisecond || c.BackoffMax < c.BackoffMin {
		add("RETRY_BACKOFF_MIN %s, RETRY_BACKOFF_MAX %s: want 1ms <= MIN <= MAX", c.BackoffMin, c.BackoffMax)
	}
}

// validateHousekeeping checks cleanup, vacuum, gauges and shutdown.
func (c Config) validateHousekeeping(add report) {
	if c.Retention < time.Minute {
		add("RETENTION %s: want at least 1m", c.Retention)
	}
	if c.CleanupInterval < time.Second {
		add("CLEANUP_INTERVAL %s: want at least 1s", c.CleanupInterval)
	}
	if c.CleanupBatch < 1 || c.CleanupBatch > 100000 {
		add("CLEANUP_BATCH %d: want 1..100000", c.CleanupBatch)
	}
	if c.VacuumDeadRows < 0 {
		add("VACUUM_DEAD_ROWS %d: want 0 (off) or more", c.VacuumDeadRows)
	}
	if c.VacuumInterval < time.Second {
		add("VACUUM_INTERVAL %s: want at least 1s", c.VacuumInterval)
	}
	if c.StatsInterval < 100*time.Millisecond {
		add("STATS_INTERVAL %s: want at least 100ms", c.StatsInterval)
	}
	if c.ShutdownTimeout < time.Second || c.ShutdownTimeout > 5*time.Minute {
		add("SHUTDOWN_TIMEOUT %s: want 1s..5m", c.ShutdownTimeout)
	}
}

// LogValue is the loggable form of c, with passwords masked.
func (c Config) LogValue() slog.Value { return envconfig.LogValue(c) }

func defaultReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "publisher"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%x", host, b)
}
