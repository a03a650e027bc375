// Command loadgen benchmarks the whole pipeline (`make bench`): it starts bin/devstack
// on databases of its own, measures the same-run baselines, drives the real API over
// HTTP, finds the maximum sustained pipeline rate, times a rebuild, and writes
// results.md, results.json and results.png into LOADGEN_RESULTS_DIR. Settings come
// from LOADGEN_* environment variables (see internal/bench.Config).
package main

import (
	"context"
	"log/slog"
	"os"
	"strings"

	"github.com/outboxtodo/outboxtodo/loadgen/internal/bench"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

func main() { process.Main("loadgen", run) }

func run(ctx context.Context, log *slog.Logger) error {
	cfg, err := bench.LoadConfig()
	if err != nil {
		return err
	}
	command := os.Getenv("LOADGEN_COMMAND")
	if command == "" {
		command = strings.Join(os.Args, " ")
	}
	return bench.Run(ctx, log, cfg, command)
}
