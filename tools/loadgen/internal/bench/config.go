package bench

import (
	"fmt"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/outboxtodo/outboxtodo/shared/redact"
)

// Config of one benchmark run, from LOADGEN_* environment variables. The defaults fit
// the whole run in Deadline plus the stack's shutdown on a 2-core machine.
type Config struct {
	ResultsDir string `env:"LOADGEN_RESULTS_DIR" envDefault:"bench/results"`
	BinDir     string `env:"LOADGEN_BIN_DIR" envDefault:"bin"`
	// AdminURL is a PostgreSQL database the run connects to first, to create and at
	// the end drop its own databases (bench_<time>, its _ferretdb and _pg siblings).
	AdminURL   string `env:"LOADGEN_ADMIN_DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"`
	APIPort    int    `env:"LOADGEN_API_PORT" envDefault:"18080"`
	NATSPort   int    `env:"LOADGEN_NATS_PORT" envDefault:"14322"`
	FerretAddr string `env:"LOADGEN_FERRETDB_ADDR" envDefault:"127.0.0.1:27117"`
	// AdminPort is the api's admin port; the publisher's and the projector's are the
	// next two. Away from the services' defaults, so that `make run` may keep running.
	AdminPort int `env:"LOADGEN_ADMIN_PORT" envDefault:"19090"`
	// Deadline bounds the phases: one that would start after it is skipped, one that
	// runs into it is cut short. Stopping the stack and writing the results follow.
	Deadline time.Duration `env:"LOADGEN_DEADLINE" envDefault:"13m"`

	Clients     int           `env:"LOADGEN_CLIENTS" envDefault:"32"`
	Warmup      time.Duration `env:"LOADGEN_WARMUP" envDefault:"5s"`
	Phase       time.Duration `env:"LOADGEN_PHASE" envDefault:"12s"`
	Baseline    time.Duration `env:"LOADGEN_BASELINE" envDefault:"8s"`
	CompletePct int           `env:"LOADGEN_COMPLETE_PCT" envDefault:"25"`
	DeletePct   int           `env:"LOADGEN_DELETE_PCT" envDefault:"15"`
	SampleEvery int           `env:"LOADGEN_SAMPLE_EVERY" envDefault:"10"`
	Poll        time.Duration `env:"LOADGEN_POLL" envDefault:"20ms"`
	PollReaders int           `env:"LOADGEN_POLL_READERS" envDefault:"2"`

	StepStart     float64       `env:"LOADGEN_STEP_START" envDefault:"100"`
	StepFactor    float64       `env:"LOADGEN_STEP_FACTOR" envDefault:"2"`
	StepPrecision float64       `env:"LOADGEN_STEP_PRECISION" envDefault:"0.15"`
	StepMax       int           `env:"LOADGEN_STEP_MAX" envDefault:"6"`
	Step          time.Duration `env:"LOADGEN_STEP" envDefault:"8s"`
	Growth        float64       `env:"LOADGEN_GROWTH_TOLERANCE" envDefault:"0.05"`
	Hold          time.Duration `env:"LOADGEN_HOLD" envDefault:"10s"`
	Drain         time.Duration `env:"LOADGEN_DRAIN_TIMEOUT" envDefault:"60s"`

	// The read-model sizes of the two step searches, in todo documents, reached by
	// seeding users of TodosPerUser todos each.
	SmallTodos   int `env:"LOADGEN_SMALL_TODOS" envDefault:"10000"`
	LargeTodos   int `env:"LOADGEN_LARGE_TODOS" envDefault:"100000"`
	TodosPerUser int `env:"LOADGEN_TODOS_PER_USER" envDefault:"100"`
	// UpdateTodos seeded todos are completed for the projector's update backlog.
	UpdateTodos int `env:"LOADGEN_UPDATE_TODOS" envDefault:"10000"`
	// ApplyTimeout bounds the projector's work on one seeded backlog, and the
	// publisher's before it.
	ApplyTimeout time.Duration `env:"LOADGEN_APPLY_TIMEOUT" envDefault:"3m"`
	// DeleteTodos is the size of the user deleted at the end; DeleteTimeout bounds the
	// wait for the read model to show it gone.
	DeleteTodos   int           `env:"LOADGEN_DELETE_TODOS" envDefault:"10000"`
	DeleteTimeout time.Duration `env:"LOADGEN_DELETE_TIMEOUT" envDefault:"60s"`

	// WriteConcurrency is the projector's WRITE_CONCURRENCY in the stack, and the
	// concurrency of the raw upsert ceiling; FetchWait its FETCH_WAIT.
	WriteConcurrency int           `env:"LOADGEN_WRITE_CONCURRENCY" envDefault:"16"`
	FetchWait        time.Duration `env:"LOADGEN_FETCH_WAIT" envDefault:"1s"`
	// The raw ceilings (package ceilings): documents per insertMany ceiling, in batches of
	// CeilingBulk (the projector's BATCH_SIZE), and guarded upserts per upsert ceiling.
	CeilingDocs    int           `env:"LOADGEN_CEILING_DOCS" envDefault:"20000"`
	CeilingBulk    int           `env:"LOADGEN_CEILING_BULK" envDefault:"100"`
	CeilingUpserts int           `env:"LOADGEN_CEILING_UPSERTS" envDefault:"3000"`
	RebuildTimeout time.Duration `env:"LOADGEN_REBUILD_TIMEOUT" envDefault:"3m"`
	Profile        time.Duration `env:"LOADGEN_PROFILE" envDefault:"10s"`

	// The projector-replicas phase: Replicas projectors (devstack's and the others it
	// starts from bin/projector, on admin ports from AdminPort+3) under ReplicaRate
	// writes/s of ReplicaUsers users of their own for ReplicaLoad; then one of them
	// killed under that load, watched for at most ReplicaKillBound; then a backlog of
	// ReplicaBacklog todos (seeded users of TodosPerUser todos) drained by 1 and by
	// Replicas replicas.
	Replicas         int           `env:"LOADGEN_REPLICAS" envDefault:"3"`
	ReplicaLoad      time.Duration `env:"LOADGEN_REPLICA_LOAD" envDefault:"60s"`
	ReplicaRate      float64       `env:"LOADGEN_REPLICA_RATE" envDefault:"200"`
	ReplicaUsers     int           `env:"LOADGEN_REPLICA_USERS" envDefault:"128"`
	ReplicaKillBound time.Duration `env:"LOADGEN_REPLICA_KILL_BOUND" envDefault:"30s"`
	ReplicaBacklog   int           `env:"LOADGEN_REPLICA_BACKLOG" envDefault:"10000"`
}

// LoadConfig reads and validates the configuration.
func LoadConfig() (Config, error) {
	c, err := env.ParseAs[Config]()
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	return c, c.Validate()
}

// Validate checks the ranges the run depends on.
func (c Config) Validate() error {
	switch {
	case c.Clients < 1:
		return fmt.Errorf("config: LOADGEN_CLIENTS %d < 1", c.Clients)
	case c.CompletePct < 0 || c.DeletePct < 0 || c.CompletePct+c.DeletePct > 100:
		return fmt.Errorf("config: LOADGEN_COMPLETE_PCT %d + LOADGEN_DELETE_PCT %d must be within 0..100", c.CompletePct, c.DeletePct)
	case c.Phase < time.Second || c.Step < 3*time.Second || c.Hold < time.Second || c.Baseline < time.Second:
		return fmt.Errorf("config: phases of at least 1s and steps of at least 3s required")
	case c.Poll <= 0 || c.SampleEvery < 1 || c.PollReaders < 1:
		return fmt.Errorf("config: LOADGEN_POLL > 0, LOADGEN_SAMPLE_EVERY >= 1 and LOADGEN_POLL_READERS >= 1 required")
	case c.CeilingDocs < 1 || c.CeilingUpserts < 1 || c.CeilingBulk < 1 || c.CeilingBulk > 1000:
		return fmt.Errorf("config: LOADGEN_CEILING_DOCS >= 1, LOADGEN_CEILING_UPSERTS >= 1 and LOADGEN_CEILING_BULK in 1..1000 required")
	case c.TodosPerUser < 1 || c.SmallTodos < 0 || c.LargeTodos < c.SmallTodos || c.UpdateTodos < 1 || c.DeleteTodos < 1:
		return fmt.Errorf("config: LOADGEN_TODOS_PER_USER >= 1, 0 <= LOADGEN_SMALL_TODOS <= LOADGEN_LARGE_TODOS, LOADGEN_UPDATE_TODOS and LOADGEN_DELETE_TODOS >= 1 required")
	case c.WriteConcurrency < 1 || c.FetchWait <= 0 || c.Deadline <= 0:
		return fmt.Errorf("config: LOADGEN_WRITE_CONCURRENCY >= 1, LOADGEN_FETCH_WAIT > 0 and LOADGEN_DEADLINE > 0 required")
	case c.Replicas < 2 || c.ReplicaRate <= 0 || c.ReplicaUsers < 1 || c.ReplicaBacklog < 1 || c.ReplicaLoad < time.Second || c.ReplicaKillBound < time.Second:
		return fmt.Errorf("config: LOADGEN_REPLICAS >= 2, LOADGEN_REPLICA_RATE > 0, LOADGEN_REPLICA_USERS and LOADGEN_REPLICA_BACKLOG >= 1, LOADGEN_REPLICA_LOAD and LOADGEN_REPLICA_KILL_BOUND >= 1s required")
	}
	return nil
}

// Masked is the configuration as it may be logged: the admin URL without its password.
func (c Config) Masked() Config {
	c.AdminURL = redact.URL(c.AdminURL)
	return c
}
