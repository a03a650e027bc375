package operate_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/operate"
)

// Bad arguments fail before anything connects.
func TestRunRejectsBadArguments(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"retry-parked", []string{"-event-id", "0190c1a2-0000-7000-8000-000000000001,not-a-uuid"}, `event id "not-a-uuid"`},
		{"list-parked", []string{"-limit", "5", "extra"}, "unexpected arguments: extra"},
		{"list-parked", []string{"-event-id", "0190c1a2-0000-7000-8000-000000000001"}, "flag provided but not defined"},
	} {
		err := operate.Run(context.Background(), tt.cmd, tt.args, io.Discard, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %v: err = %v, want %q", tt.cmd, tt.args, err, tt.want)
		}
	}
}
