package idempotency_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
)

func TestFingerprintSeparatesParts(t *testing.T) {
	t.Parallel()
	a := idempotency.Fingerprint("POST", "/v1/todos", []byte("x"))
	for _, other := range [][]byte{
		idempotency.Fingerprint("POST", "/v1/todosx", nil),
		idempotency.Fingerprint("POST", "/v1/todos", []byte("y")),
		idempotency.Fingerprint("PATCH", "/v1/todos", []byte("x")),
	} {
		if bytes.Equal(a, other) {
			t.Fatal("different requests share a fingerprint")
		}
	}
}

func FuzzValidKey(f *testing.F) {
	for _, s := range []string{"k", "create-1", "", strings.Repeat("k", 255), strings.Repeat("k", 256), "a\nb", "é", "\x7f", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, k string) {
		if !idempotency.ValidKey(k) {
			return
		}
		if k == "" || len(k) > idempotency.MaxKeyLen {
			t.Fatalf("accepted a key of %d bytes", len(k))
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x20 || k[i] > 0x7e {
				t.Fatalf("accepted %q: the key is stored and compared as printable ASCII", k)
			}
		}
	})
}
