// Command loadgen benchmarks the whole pipeline (`make bench`): it starts bin/devstack
// on databases of its own and runs the phases of package bench (same-run baselines, the
// maximum sustained rate at two read-model sizes, the projector and a rebuild against
// the server's raw ceilings, the API's phases, the deletion of a large user), then
// writes results.md, results.json and results.png into LOADGEN_RESULTS_DIR. It exits
// non-zero when a phase failed, after writing the results of the others. Settings come
// from LOADGEN_* environment variables (see internal/bench.Config).
package main

import (
	"context"
	"log/slog"
	"os"
	"strings"

	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/bench"
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
