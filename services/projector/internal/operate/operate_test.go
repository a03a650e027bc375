package operate_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/operate"
)

// help prints the usage, and bad arguments fail before anything connects.
func TestRunRejectsBadArguments(t *testing.T) {
	var out bytes.Buffer
	if err := operate.Run(context.Background(), "help", nil, &out, slog.New(slog.DiscardHandler)); err != nil || !strings.HasPrefix(out.String(), "usage: projector") {
		t.Fatalf("help = %v:\n%s", err, out.String())
	}
	for _, tt := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"deadletters", nil, "deadletters: want list or redrive"},
		{"deadletters", []string{"list", "--yes"}, "flag provided but not defined: -yes"},
		{"rebuild", []string{"--batch-size", "many"}, "invalid value"},
		{"rebuld", nil, `unknown command "rebuld"`},
	} {
		err := operate.Run(context.Background(), tt.cmd, tt.args, &out, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %v: err = %v, want %q", tt.cmd, tt.args, err, tt.want)
		}
	}
}
