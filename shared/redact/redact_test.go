package redact_test

import (
	"strings"
	"testing"

	"github.com/outboxtodo/outboxtodo/shared/redact"
)

func TestURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://app:s3cret@db:5432/todo?sslmode=require":                            "postgres://app:xxxxx@db:5432/todo?sslmode=require",
		"postgres://postgres@127.0.0.1:5432/todo":                                       "postgres://postgres@127.0.0.1:5432/todo",
		"mongodb://reader:s3cret@mongo:27017/?tls=true":                                 "mongodb://reader:xxxxx@mongo:27017/?tls=true",
		"postgres://app:s3cret@db:bad port/x":                                           "(unparsable url)",
		"postgres://app@db/todo?sslmode=verify-full&sslpassword=s3cret&password=s3cret": "postgres://app@db/todo?password=xxxxx&sslmode=verify-full&sslpassword=xxxxx",
		"mongodb://m:27017/?tls=true&tlsCertificateKeyFilePassword=s3cret":              "mongodb://m:27017/?tls=true&tlsCertificateKeyFilePassword=xxxxx",
	} {
		if got := redact.URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNATSURLs(t *testing.T) {
	t.Parallel()
	got := redact.NATSURLs("nats://u:s3cret@n1:4222, nats://t0ken@n2:4222,nats://n3:4222")
	if strings.Contains(got, "s3cret") || strings.Contains(got, "t0ken") {
		t.Fatalf("secret left in %q", got)
	}
	if got != "nats://u:xxxxx@n1:4222,nats://xxxxx@n2:4222,nats://n3:4222" {
		t.Fatalf("NATSURLs = %q", got)
	}
}
