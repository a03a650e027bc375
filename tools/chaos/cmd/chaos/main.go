// Command chaos is the fault runner of `make chaos`: it runs the whole system on
// private servers, kills services and restarts servers under a steady write load, then
// checks that nothing acknowledged was lost, nothing failed left a trace, every event
// is in the stream once and the read model equals PostgreSQL. It prints the counts as
// its last lines and exits 1 when a check failed.
//
// Configuration: CHAOS_* environment variables (see package runner's Config).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/caarlos0/env/v11"

	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/tools/chaos/internal/runner"
)

func main() { process.Main("chaos", run) }

func run(ctx context.Context, log *slog.Logger) error {
	cfg, err := env.ParseAs[runner.Config]()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log.Info("config", "duration", cfg.Duration, "kill_every", cfg.KillEvery, "restart_every", cfg.RestartEvery,
		"downtime", cfg.Downtime, "writers", cfg.Writers, "write_pause", cfg.WritePause,
		"publishers", cfg.Publishers, "projectors", cfg.Projectors, "work_dir", cfg.WorkDir)
	rep, err := runner.Run(ctx, cfg, log)
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	if !rep.Pass() {
		return errors.New("chaos run failed")
	}
	return nil
}
