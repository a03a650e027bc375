package config_test

import (
	"strings"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/config"
)

func TestDefaultsAreValid(t *testing.T) {
	t.Parallel()
	c, err := config.FromMap(map[string]string{})
	if err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
	if c.StreamName != "TODO_EVENTS" || c.SubjectPrefix != "todo.events" || c.ReplicaID == "" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if c.DuplicateWindow < c.MaxRepublishDelay() {
		t.Fatalf("default duplicate window %s below the republish delay %s", c.DuplicateWindow, c.MaxRepublishDelay())
	}
}

func TestInvalidSettingsAreReportedTogether(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"duplicate window shorter than a republish can wait",
			map[string]string{"STREAM_DUPLICATE_WINDOW": "30s", "LEASE_TTL": "15s", "RETRY_BACKOFF_MAX": "1m"},
			[]string{"STREAM_DUPLICATE_WINDOW"}},
		{"max age below the duplicate window", map[string]string{"STREAM_MAX_AGE": "1m"}, []string{"STREAM_MAX_AGE"}},
		{"several at once",
			map[string]string{"BATCH_SIZE": "0", "WAKE_MODE": "sometimes", "SUBJECT_PREFIX": "todo.*", "POLL_MIN": "2s", "POLL_MAX": "1s"},
			[]string{"BATCH_SIZE", "WAKE_MODE", "SUBJECT_PREFIX", "POLL_MIN"}},
		{"stream name with a dot", map[string]string{"STREAM_NAME": "todo.events"}, []string{"STREAM_NAME"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.FromMap(tt.env)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	c, err := config.FromMap(map[string]string{
		"DATABASE_URL": "postgres://u:dbsecret@db:5432/todo",
		"NATS_URL":     "nats://u:natssecret@n1:4222,nats://tokensecret@n2:4222",
	})
	if err != nil {
		t.Fatal(err)
	}
	s := c.LogValue().String()
	for _, secret := range []string{"dbsecret", "natssecret", "tokensecret"} {
		if strings.Contains(s, secret) {
			t.Errorf("logged config contains %s: %s", secret, s)
		}
	}
}
