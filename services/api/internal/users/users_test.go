package users_test

import (
	"net/mail"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
)

func checkEmail(t *testing.T, e string) {
	t.Helper()
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || e != strings.ToLower(strings.TrimSpace(e)) || len(e) > users.MaxEmailLen {
		t.Fatalf("accepted email %q", e)
	}
}

func checkName(t *testing.T, n string) {
	t.Helper()
	if c := utf8.RuneCountInString(n); c < 1 || c > users.MaxDisplayNameLen || strings.TrimSpace(n) != n || strings.IndexFunc(n, unicode.IsControl) >= 0 {
		t.Fatalf("accepted display name %q", n)
	}
}

var seeds = []string{
	`{"email":"ada@example.com","display_name":"Ada"}`,
	`{"email":" ADA@Example.com ","display_name":"  Ada  "}`,
	`{"email":"Ada <ada@example.com>","display_name":""}`,
	`{"email":null,"display_name":null}`, `{"email":5}`, `{}`, `{"display_name":"a\u0085b"}`,
	`{"email":"\"a b\"@example.com","display_name":"x"}`, `{"email":"a@b","display_name":"x","x":1}`, `nul`,
}

func FuzzParseSignUp(f *testing.F) {
	apitest.FuzzBody(f, seeds, users.ParseSignUp, func(t *testing.T, s users.SignUp) {
		checkEmail(t, s.Email)
		checkName(t, s.DisplayName)
	})
}

func FuzzParsePatch(f *testing.F) {
	apitest.FuzzBody(f, seeds, users.ParsePatch, func(t *testing.T, p users.Patch) {
		if p.Email != nil {
			checkEmail(t, *p.Email)
		}
		if p.DisplayName != nil {
			checkName(t, *p.DisplayName)
		}
	})
}

func TestSignUpNormalises(t *testing.T) {
	t.Parallel()
	s, err := users.ParseSignUp([]byte(`{"email":" ADA@Example.com ","display_name":"  Ada  "}`))
	if err != nil || s.Email != "ada@example.com" || s.DisplayName != "Ada" {
		t.Fatalf("%+v %v", s, err)
	}
}
