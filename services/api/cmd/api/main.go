// Command api serves the public REST API on API_ADDR and the admin endpoints (probes,
// metrics, pprof) on ADMIN_ADDR. See internal/config for every setting and internal/app
// for what runs.
package main

import (
	"context"
	"log/slog"

	"github.com/outboxtodo/outboxtodo/services/api/internal/app"
	"github.com/outboxtodo/outboxtodo/services/api/internal/config"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

func main() {
	process.Main("api", func(ctx context.Context, log *slog.Logger) error {
		return process.RunApp(ctx, log, config.Load, app.New)
	})
}
