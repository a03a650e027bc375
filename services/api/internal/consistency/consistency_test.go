package consistency_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/consistency"
)

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	tok := consistency.Token{Owner: uuid.New(), UserVersion: 3, StatsVersion: 17}
	got, err := consistency.Parse(tok.String())
	if err != nil || got != tok {
		t.Fatalf("Parse(%q) = %+v, %v; want %+v", tok.String(), got, err, tok)
	}
	for _, bad := range []string{"", "c1", "c2." + tok.Owner.String() + ".1.1", "c1." + tok.Owner.String() + ".1",
		"c1." + tok.Owner.String() + ".-1.1", "c1.not-a-uuid-at-all-but-36-characters.1.1", "c1." + tok.Owner.String() + ".1.x"} {
		if _, err := consistency.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted it", bad)
		}
	}
}

func TestReachedBy(t *testing.T) {
	t.Parallel()
	tok := consistency.Token{Owner: uuid.New(), UserVersion: 2, StatsVersion: 5}
	for _, c := range []struct {
		user, stats int64
		want        bool
	}{{2, 5, true}, {3, 9, true}, {1, 5, false}, {2, 4, false}, {0, 0, false}} {
		if got := tok.ReachedBy(c.user, c.stats); got != c.want {
			t.Errorf("ReachedBy(%d, %d) = %v, want %v", c.user, c.stats, got, c.want)
		}
	}
	if !(consistency.Token{Owner: tok.Owner}).ReachedBy(0, 0) {
		t.Error("a token that names no version is not reached by anything")
	}
}
