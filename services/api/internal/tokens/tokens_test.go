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
