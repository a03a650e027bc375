// Command publisher relays the outbox into JetStream (see internal/app for what runs
// and internal/relay for how).
//
//	publisher                                   run the relay (configured by environment)
//	publisher list-parked [-limit N]            print parked rows as JSON lines
//	publisher retry-parked [-event-id ID ...]   unpark the given rows, or all parked rows
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/app"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/operate"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

func main() {
	cmd := ""
	if len(os.Args) > 1 {
		cmd = os.Args[1]
	}
	switch cmd {
	case "":
		process.Main("publisher", func(ctx context.Context, log *slog.Logger) error {
			return process.RunApp(ctx, log, config.Load, app.New)
		})
	case "list-parked", "retry-parked":
		process.Main("publisher", func(ctx context.Context, log *slog.Logger) error {
			return operate.Run(ctx, cmd, os.Args[2:], os.Stdout, log)
		})
	default:
		fmt.Fprintf(os.Stderr, "publisher: unknown command %q (want none, list-parked or retry-parked)\n", cmd)
		os.Exit(2)
	}
}
