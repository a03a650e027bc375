package envconfig_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/envconfig"
)

type files struct {
	CA   string `env:"CA"`
	Cert string `env:"CERT"`
}

type config struct {
	Addr      string          `env:"ADDR" envDefault:":8080"`
	Timeout   time.Duration   `env:"TIMEOUT" envDefault:"90s"`
	Backoff   []time.Duration `env:"BACKOFF" envSeparator:"," envDefault:"1s,5s"`
	Origins   []string        `env:"ORIGINS" envSeparator:","`
	Workers   int32           `env:"WORKERS" envDefault:"4"`
	Journal   bool            `env:"JOURNAL" envDefault:"true"`
	Key       string          `env:"KEY,notEmpty" secret:"true"`
	Unset     string          `env:"UNSET_SECRET" secret:"true"`
	DB        string          `env:"DATABASE_URL" secret:"url"`
	NATS      string          `env:"NATS_URL" secret:"natsurls"`
	Odd       string          `env:"ODD" secret:"something"`
	TLS       files           `envPrefix:"TLS_"`
	Plain     files
	Derived   []int `env:"-"`
	unchecked string
}

// dump logs cfg as a JSON handler does and decodes the config group.
func dump(t *testing.T, cfg any) (string, map[string]any) {
	t.Helper()
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("starting", "config", envconfig.LogValue(cfg))
	var line struct{ Config map[string]any }
	if err := json.Unmarshal([]byte(b.String()), &line); err != nil {
		t.Fatalf("%v: %s", err, b.String())
	}
	return b.String(), line.Config
}

func TestLogValue(t *testing.T) {
	t.Parallel()
	c, err := envconfig.Parse[config](map[string]string{
		"KEY":          "k3y-value",
		"DATABASE_URL": "postgres://app:dbpass@db:5432/todo?sslmode=verify-full&password=qpass",
		"NATS_URL":     "nats://u:natspass@n1:4222,nats://tokenvalue@n2:4222",
		"ODD":          "oddvalue",
		"ORIGINS":      "https://a.example,https://b.example",
		"TLS_CA":       "/etc/ca.pem",
		"CERT":         "/etc/cert.pem",
	})
	if err != nil {
		t.Fatal(err)
	}
	c.unchecked = "unexported"
	out, got := dump(t, &c)
	for _, secret := range []string{"k3y-value", "dbpass", "qpass", "natspass", "tokenvalue", "oddvalue", "unexported"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds %q: %s", secret, out)
		}
	}
	want := map[string]any{
		"ADDR":         ":8080",
		"TIMEOUT":      "1m30s",
		"BACKOFF":      []any{"1s", "5s"},
		"ORIGINS":      []any{"https://a.example", "https://b.example"},
		"WORKERS":      float64(4),
		"JOURNAL":      true,
		"KEY":          "xxxxx",
		"UNSET_SECRET": "",
		"ODD":          "xxxxx",
		"TLS_CA":       "/etc/ca.pem",
		"TLS_CERT":     "",
		"CA":           "",
		"CERT":         "/etc/cert.pem",
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || !equalJSON(g, w) {
			t.Errorf("%s = %#v, want %#v", k, g, w)
		}
	}
	// The user and hosts stay readable; only the credentials go.
	if db := got["DATABASE_URL"].(string); !strings.Contains(db, "app:") || !strings.Contains(db, "@db:5432/todo") {
		t.Errorf("DATABASE_URL = %s", db)
	}
	if n := got["NATS_URL"].(string); !strings.Contains(n, "u:") || !strings.Contains(n, "@n1:4222") || !strings.Contains(n, "@n2:4222") {
		t.Errorf("NATS_URL = %s", n)
	}
	if _, ok := got["Derived"]; ok || len(got) != len(want)+2 {
		t.Errorf("want exactly the env-tagged fields, got %v", got)
	}
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// A struct that logs itself with LogValue, as the services' configs do, goes through
// the same masking.
type withLogValue struct {
	Password string `env:"PASSWORD" secret:"true"`
}

func (c withLogValue) LogValue() slog.Value { return envconfig.LogValue(c) }

func TestLogValuerNeverShowsSecret(t *testing.T) {
	t.Parallel()
	out, got := dump(t, struct{ Inner withLogValue }{withLogValue{Password: "pw-never-logged"}})
	if strings.Contains(out, "pw-never-logged") || got["PASSWORD"] != "xxxxx" {
		t.Fatalf("logged %s", out)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("starting", "config", withLogValue{Password: "pw-never-logged"})
	if strings.Contains(b.String(), "pw-never-logged") {
		t.Fatalf("logged %s", b.String())
	}
}

func TestParseReportsBadValues(t *testing.T) {
	t.Parallel()
	if _, err := envconfig.Parse[config](map[string]string{"TIMEOUT": "soon", "KEY": "k"}); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("err = %v", err)
	}
	if _, err := envconfig.Parse[config](map[string]string{}); err == nil || !strings.Contains(err.Error(), "KEY") {
		t.Fatalf("a notEmpty field left empty: err = %v", err)
	}
}
