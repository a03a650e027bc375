// Command projector applies the event stream to the MongoDB read model, and carries
// the read side's operator tools (dead letters, rebuild). Run `projector help` for the
// commands.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/commands"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

func main() {
	process.Main("projector", func(ctx context.Context, log *slog.Logger) error {
		return commands.Run(ctx, log, os.Args[1:], os.Stdout)
	})
}
