// Command projector applies the event stream to the MongoDB read model (see
// internal/app for what runs), and carries the read side's operator tools (dead letters
// and rebuild, in internal/operate). Run `projector help` for the commands.
package main

import (
	"context"
	"log/slog"
	"os"
	"strings"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/app"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/config"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/operate"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

func main() {
	cmd, args := "run", os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	process.Main("projector", func(ctx context.Context, log *slog.Logger) error {
		switch cmd {
		case "run":
			return process.RunApp(ctx, log, config.Load, app.New)
		}
		return operate.Run(ctx, cmd, args, os.Stdout, log)
	})
}
