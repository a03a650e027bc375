package tokens_test

import (
	"bytes"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
)

func TestNew(t *testing.T) {
	t.Parallel()
	a, ha := tokens.New()
	b, _ := tokens.New()
	if a == b || !tokens.WellFormed(a) || !bytes.Equal(ha, tokens.Hash(a)) || len(ha) != 32 {
		t.Fatalf("%q %q", a, b)
	}
	for _, s := range []string{"", "tdo_", a[:len(a)-1], "xyz_" + a[4:], a[:len(a)-1] + "=", a[:len(a)-1] + "\n"} {
		if tokens.WellFormed(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func FuzzWellFormed(f *testing.F) {
	good, _ := tokens.New()
	for _, s := range []string{good, "", "tdo_", good[:len(good)-1] + "\n", good + "=", "TDO_" + good[4:], good[:20] + "\r\n" + good[20:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !tokens.WellFormed(s) {
			return
		}
		// Anything accepted has exactly the shape New produces, so it can be hashed
		// and looked up, and nothing else reaches the database.
		if len(s) != len(good) || s[:4] != tokens.Prefix || len(tokens.Hash(s)) != 32 {
			t.Fatalf("accepted %q", s)
		}
		for i := 4; i < len(s); i++ {
			c := s[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				t.Fatalf("accepted %q with byte %q", s, c)
			}
		}
	})
}
