// Command todoctl runs the write side's operator tools: verify (PostgreSQL against the
// read model), resync (re-emit events through the outbox) and restore-cutover (after a
// restore of PostgreSQL). Run `todoctl help` for the commands.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/outboxtodo/outboxtodo/services/api/internal/todoctl"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

func main() {
	process.Main("todoctl", func(ctx context.Context, log *slog.Logger) error {
		return todoctl.Run(ctx, os.Args[1:], os.Stdout, log)
	})
}
