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
		"API_ADDR": "8080", "DB_MAX_CONNS": "0", "MAX_BODY_BYTES": "1", "CORS_ALLOWED_ORIGINS": "https://a.example,ftp://b",
	})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"API_ADDR", "DB_MAX_CONNS", "MAX_BODY_BYTES", "ftp://b"} {
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
	c, err := config.FromMap(map[string]string{"DATABASE_URL": "postgres://app:s3cret@db:5432/todo", "CORS_ALLOWED_ORIGINS": "https://a.example",
		"MONGODB_URI": "mongodb://reader:s3cret@mongo:27017/", "NATS_URL": "nats://api:s3cret@nats:4222"})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("starting", "config", c)
	if strings.Contains(b.String(), "s3cret") || !strings.Contains(b.String(), "https://a.example") ||
		!strings.Contains(b.String(), "reader:xxxxx@mongo:27017") {
		t.Fatalf("logged %s", b.String())
	}
}

func TestSecurityDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	c, err := config.FromMap(map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.RateLimitPerIP != 100 || c.RateLimitPerIPBurst != 200 || c.RateLimitPerToken != 50 || c.RateLimitPerTokenBurst != 100 ||
		c.MaxHeaderBytes != 16<<10 || c.ReadHeaderTimeout != 5*time.Second || c.IdleTimeout != 2*time.Minute || c.CursorSecret != "" ||
		len(c.TrustedProxyPrefixes) != 2 || c.TrustedProxyPrefixes[1].String() != "192.168.0.1/32" {
		t.Fatalf("%+v", c)
	}
	if _, err := config.FromMap(map[string]string{"RATE_LIMIT_PER_IP": "0", "RATE_LIMIT_PER_IP_BURST": "0", "RATE_LIMIT_PER_TOKEN": "0"}); err != nil {
		t.Fatalf("disabling the limits: %v", err)
	}
	_, err = config.FromMap(map[string]string{
		"CURSOR_SECRET": "short", "RATE_LIMIT_PER_IP": "-1", "RATE_LIMIT_PER_TOKEN": "5", "RATE_LIMIT_PER_TOKEN_BURST": "0",
		"TRUSTED_PROXIES": "10.0.0.0/8,proxy.local", "MAX_HEADER_BYTES": "10", "READ_HEADER_TIMEOUT": "0s", "IDLE_TIMEOUT": "2h",
		"RATE_LIMIT_KEYS": "5",
	})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"CURSOR_SECRET", "RATE_LIMIT_PER_IP ", "RATE_LIMIT_PER_TOKEN_BURST", "proxy.local", "MAX_HEADER_BYTES",
		"READ_HEADER_TIMEOUT", "IDLE_TIMEOUT", "RATE_LIMIT_KEYS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "short") {
		t.Error("the error shows the cursor secret")
	}
}

func TestLogValueMasksCursorSecret(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("s3cr3t", 8)
	c, err := config.FromMap(map[string]string{"CURSOR_SECRET": secret})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("starting", "config", c)
	if strings.Contains(b.String(), "s3cr3t") || !strings.Contains(b.String(), `"CURSOR_SECRET":"xxxxx"`) {
		t.Fatalf("logged %s", b.String())
	}
}

func TestSignInAndReadYourWritesSettings(t *testing.T) {
	t.Parallel()
	c, err := config.FromMap(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.PasswordHashMemory != 19456 || c.PasswordHashTime != 2 || c.PasswordHashThreads != 1 || c.PasswordHashConcurrency != 2 ||
		c.SignInPerEmail != 10 || c.SignInPerAddress != 30 || c.SignInWindow != 15*time.Minute || c.ReadYourWritesWait != 2*time.Second ||
		c.PublicURL != "" {
		t.Fatalf("defaults: %+v", c)
	}
	_, err = config.FromMap(map[string]string{
		"PASSWORD_HASH_MEMORY": "512", "PASSWORD_HASH_CONCURRENCY": "0", "SIGN_IN_WINDOW": "0s",
		"READ_YOUR_WRITES_WAIT": "-1s", "PUBLIC_URL": "todo.example.com",
	})
	if err == nil {
		t.Fatal("invalid settings accepted")
	}
	for _, want := range []string{"PASSWORD_HASH_MEMORY", "PASSWORD_HASH_CONCURRENCY", "SIGN_IN_WINDOW", "READ_YOUR_WRITES_WAIT", "PUBLIC_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %s: %v", want, err)
		}
	}
}
