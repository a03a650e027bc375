package config_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/config"
)

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.FromMap(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.APIAddr != ":8080" || c.AdminAddr != ":9090" || c.MaxBodyBytes != 64<<10 || c.RequestTimeout != 10*time.Second ||
		c.ShutdownTimeout >= 30*time.Second || len(c.CORSAllowedOrigins) != 0 {
		t.Fatalf("%+v", c)
	}
}

func TestValidationListsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := config.FromMap(map[string]string{
		"API_ADDR": "8080", "DB_MAX_CONNS": "0", "MAX_BODY_BYTES": "1", "CORS_ALLOWED_ORIGINS": "https://a.example,ftp://b", "LOG_LEVEL": "loud",
	})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"API_ADDR", "DB_MAX_CONNS", "MAX_BODY_BYTES", "ftp://b", "LOG_LEVEL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := config.FromMap(map[string]string{"REQUEST_TIMEOUT": "soon"}); err == nil {
		t.Fatal("accepted an unparsable duration")
	}
}

func TestLogValueMasksPassword(t *testing.T) {
	t.Parallel()
	c, err := config.FromMap(map[string]string{"DATABASE_URL": "postgres://app:s3cret@db:5432/todo", "CORS_ALLOWED_ORIGINS": "https://a.example"})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("starting", "config", c)
	if strings.Contains(b.String(), "s3cret") || !strings.Contains(b.String(), "https://a.example") {
		t.Fatalf("logged %s", b.String())
	}
}
