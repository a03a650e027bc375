package tokens_test

import (
	"bytes"
	"testing"
	"time"

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

func TestParseIssue(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	for _, c := range []struct {
		name string
		body string
		ttl  time.Duration
		want *time.Time
		bad  bool
	}{
		{"no body, no lifetime", "", 0, nil, false},
		{"no body, lifetime", "", time.Hour, at(time.Hour), false},
		{"empty object", "{}", time.Hour, at(time.Hour), false},
		{"earlier than the lifetime", `{"expires_at":"2030-01-02T10:30:00Z"}`, time.Hour, at(30 * time.Minute), false},
		{"any future time without a lifetime", `{"expires_at":"2031-01-02T10:00:00+01:00"}`, 0, at(365*24*time.Hour - time.Hour), false},
		{"later than the lifetime", `{"expires_at":"2030-01-02T11:00:01Z"}`, time.Hour, nil, true},
		{"in the past", `{"expires_at":"2030-01-02T10:00:00Z"}`, 0, nil, true},
		{"null", `{"expires_at":null}`, 0, nil, true},
		{"not a time", `{"expires_at":3}`, 0, nil, true},
	} {
		got, err := tokens.ParseIssue([]byte(c.body), now, c.ttl)
		switch {
		case c.bad && err == nil:
			t.Errorf("%s: accepted (%v)", c.name, got)
		case !c.bad && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case !c.bad && (got == nil) != (c.want == nil), got != nil && c.want != nil && !got.Equal(*c.want):
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if _, err := tokens.ParseIssue([]byte(`{"expires":"x"}`), now, 0); err == nil {
		t.Error("unknown field accepted")
	}
}
