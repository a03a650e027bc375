package ferret

import (
	"context"
	"log/slog"
	"strings"
)

// LogHandler wraps h for FerretDB's own logs: errors only (FerretDB dumps whole wire
// messages at warn whenever a client disconnects), minus its error line for every
// duplicate-key answer, which the read model's version-guarded upserts get for each
// stale event by design.
func LogHandler(h slog.Handler) slog.Handler { return quietHandler{h} }

type quietHandler struct{ slog.Handler }

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError && h.Handler.Enabled(ctx, l)
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	dup := strings.Contains(r.Message, "duplicate key")
	r.Attrs(func(a slog.Attr) bool {
		dup = dup || strings.Contains(a.Value.String(), "duplicate key")
		return !dup
	})
	if dup {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(as)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}
