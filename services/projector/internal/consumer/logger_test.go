package consumer

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

func TestRouterHandlerErrorsAtDebug(t *testing.T) {
	var buf bytes.Buffer
	log := quietHandlerErrors{watermill.NewSlogLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))}
	log.With(watermill.LogFields{"handler": "project"}).Error("Handler returned error", errors.New("nack"), nil)
	log.Error("Cannot close router", errors.New("stuck"), nil)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("logged %d lines, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "level=DEBUG") || !strings.Contains(lines[0], "nack") || !strings.Contains(lines[0], "handler=project") {
		t.Errorf("handler error not at debug with its error and fields: %s", lines[0])
	}
	if !strings.Contains(lines[1], "level=ERROR") {
		t.Errorf("the router's other errors lost their level: %s", lines[1])
	}
}
