package bench

import (
	"fmt"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/outboxtodo/outboxtodo/shared/redact"
)

// Config of one benchmark run, from LOADGEN_* environment variables. The defaults fit
// the whole run (baselines, phases, step search, rebuild) in about eight minutes.
type Config struct {
	ResultsDir string `env:"LOADGEN_RESULTS_DIR" envDefault:"bench/results"`
	BinDir     string `env:"LOADGEN_BIN_DIR" envDefault:"bin"`
	// AdminURL is a PostgreSQL database the run connects to first, to create and at
	// the end drop its own databases (bench_<time>, its _ferretdb and _pg siblings).
	AdminURL   string `env:"LOADGEN_ADMIN_DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"`
	APIPort    int    `env:"LOADGEN_API_PORT" envDefault:"18080"`
	NATSPort   int    `env:"LOADGEN_NATS_PORT" envDefault:"14322"`
	FerretAddr string `env:"LOADGEN_FERRETDB_ADDR" envDefault:"127.0.0.1:27117"`

	Clients     int           `env:"LOADGEN_CLIENTS" envDefault:"32"`
	Warmup      time.Duration `env:"LOADGEN_WARMUP" envDefault:"5s"`
	Phase       time.Duration `env:"LOADGEN_PHASE" envDefault:"12s"`
	Baseline    time.Duration `env:"LOADGEN_BASELINE" envDefault:"8s"`
	CompletePct int           `env:"LOADGEN_COMPLETE_PCT" envDefault:"25"`
	DeletePct   int           `env:"LOADGEN_DELETE_PCT" envDefault:"15"`
	SampleEvery int           `env:"LOADGEN_SAMPLE_EVERY" envDefault:"10"`
	Poll        time.Duration `env:"LOADGEN_POLL" envDefault:"100ms"`

	StepStart     float64       `env:"LOADGEN_STEP_START" envDefault:"50"`
	StepFactor    float64       `env:"LOADGEN_STEP_FACTOR" envDefault:"2"`
	StepPrecision float64       `env:"LOADGEN_STEP_PRECISION" envDefault:"0.15"`
	StepMax       int           `env:"LOADGEN_STEP_MAX" envDefault:"5"`
	Step          time.Duration `env:"LOADGEN_STEP" envDefault:"10s"`
	Growth        float64       `env:"LOADGEN_GROWTH_TOLERANCE" envDefault:"0.05"`
	Hold          time.Duration `env:"LOADGEN_HOLD" envDefault:"15s"`
	Drain         time.Duration `env:"LOADGEN_DRAIN_TIMEOUT" envDefault:"60s"`

	CeilingDocs    int           `env:"LOADGEN_CEILING_DOCS" envDefault:"20000"`
	CeilingBulk    int           `env:"LOADGEN_CEILING_BULK" envDefault:"100"`
	RebuildEvents  int           `env:"LOADGEN_REBUILD_EVENTS" envDefault:"20000"`
	RebuildTimeout time.Duration `env:"LOADGEN_REBUILD_TIMEOUT" envDefault:"120s"`
	Profile        time.Duration `env:"LOADGEN_PROFILE" envDefault:"10s"`
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
	case c.Poll <= 0 || c.SampleEvery < 1:
		return fmt.Errorf("config: LOADGEN_POLL > 0 and LOADGEN_SAMPLE_EVERY >= 1 required")
	case c.CeilingDocs < 1 || c.CeilingBulk < 1 || c.CeilingBulk > 1000:
		return fmt.Errorf("config: LOADGEN_CEILING_DOCS >= 1 and LOADGEN_CEILING_BULK in 1..1000 required")
	}
	return nil
}

// Masked is the configuration as it may be logged: the admin URL without its password.
func (c Config) Masked() Config {
	c.AdminURL = redact.URL(c.AdminURL)
	return c
}
