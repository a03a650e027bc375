// Package users is the user aggregate: its state, the rules for signing up and changing
// a profile, and the errors the store reports about users.
package users

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/input"
	"github.com/outboxtodo/outboxtodo/services/api/internal/password"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// Limits of the profile fields.
const (
	MaxEmailLen       = 254 // RFC 5321's limit on a forward path, in characters
	MaxDisplayNameLen = 100
)

// Errors reported by the store.
var (
	ErrNotFound   = errors.New("user not found")
	ErrEmailTaken = errors.New("email address already registered")
	// ErrVersionMismatch means the caller's expected version (If-Match) is stale.
	ErrVersionMismatch = errors.New("user version does not match")
	// ErrPasswordChanged means the password was changed by another request meanwhile.
	ErrPasswordChanged = errors.New("password changed concurrently")
)

// User is the state of one user.
type User struct {
	ID          uuid.UUID `json:"id"`
	Email       string    `json:"email"`
	DisplayName string    `json:"display_name"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Data is the event payload of u.
func (u User) Data() event.UserData {
	return event.UserData(u)
}

// SignUp is a validated sign-up request.
type SignUp struct {
	Email       string
	DisplayName string
	// Password is empty when the user signs up without one (they can set one later).
	Password string
}

// User returns the new user at version 1. now must already be truncated to the
// database's precision so the state returned equals the state stored.
func (s SignUp) User(id uuid.UUID, now time.Time) User {
	return User{ID: id, Email: s.Email, DisplayName: s.DisplayName, Version: 1, CreatedAt: now, UpdatedAt: now}
}

type signUpBody struct {
	Email       input.Field[string] `json:"email"`
	DisplayName input.Field[string] `json:"display_name"`
	Password    input.Field[string] `json:"password"`
}

// ParseSignUp parses a sign-up body, reporting every invalid field.
func ParseSignUp(body []byte) (SignUp, error) {
	return input.Parse(body, func(b signUpBody, errs *input.Errors) SignUp {
		email, _ := parseEmail(errs, b.Email, true)
		name, _ := parseDisplayName(errs, b.DisplayName, true)
		pw, _ := parsePassword(errs, "/password", b.Password, false)
		return SignUp{Email: email, DisplayName: name, Password: pw}
	})
}

// SignIn is a validated sign-in request.
type SignIn struct {
	Email    string
	Password string
}

type signInBody struct {
	Email    input.Field[string] `json:"email"`
	Password input.Field[string] `json:"password"`
}

// ParseSignIn parses a sign-in body. A password of the wrong length is not reported
// as such: it is simply wrong, like any other, so that the answer does not depend on
// what the stored one is.
func ParseSignIn(body []byte) (SignIn, error) {
	return input.Parse(body, func(b signInBody, errs *input.Errors) SignIn {
		email, _ := parseEmail(errs, b.Email, true)
		switch {
		case !b.Password.Present, b.Password.Null:
			errs.Add("/password", "is required")
		case b.Password.Invalid:
			errs.Add("/password", "must be a string")
		case len(b.Password.Value) > 4*password.MaxLen:
			errs.Add("/password", fmt.Sprintf("must be at most %d characters", password.MaxLen))
		}
		return SignIn{Email: email, Password: b.Password.Value}
	})
}

// NewPassword is a validated request to set the caller's password.
type NewPassword struct {
	Password string
	// Current is the password being replaced; empty when none was sent.
	Current string
}

type newPasswordBody struct {
	Password        input.Field[string] `json:"password"`
	CurrentPassword input.Field[string] `json:"current_password"`
}

// ParseNewPassword parses the body of a password change.
func ParseNewPassword(body []byte) (NewPassword, error) {
	return input.Parse(body, func(b newPasswordBody, errs *input.Errors) NewPassword {
		pw, _ := parsePassword(errs, "/password", b.Password, true)
		var current string
		switch f := b.CurrentPassword; {
		case !f.Present:
		case f.Null || f.Invalid:
			errs.Add("/current_password", "must be a string")
		default:
			current = f.Value
		}
		return NewPassword{Password: pw, Current: current}
	})
}

// parsePassword checks a new password's length. It is kept exactly as sent: no
// trimming or normalisation, so that what the user typed is what they sign in with.
func parsePassword(errs *input.Errors, ptr string, f input.Field[string], required bool) (string, bool) {
	switch {
	case !f.Present && !required:
		return "", false
	case !f.Present, f.Null:
		errs.Add(ptr, "is required")
		return "", false
	case f.Invalid:
		errs.Add(ptr, "must be a string")
		return "", false
	case !password.CheckLen(f.Value):
		errs.Add(ptr, fmt.Sprintf("must be %d to %d characters", password.MinLen, password.MaxLen))
		return "", false
	}
	return f.Value, true
}

// Patch is a validated merge patch of a user: nil members stay unchanged.
type Patch struct {
	Email       *string
	DisplayName *string
}

// Apply returns u changed by p at time now, with its version bumped.
func (u User) Apply(p Patch, now time.Time) User {
	if p.Email != nil {
		u.Email = *p.Email
	}
	if p.DisplayName != nil {
		u.DisplayName = *p.DisplayName
	}
	u.Version++
	u.UpdatedAt = now
	return u
}

// ParsePatch parses a JSON merge patch of the profile. Neither field may be null: a
// user always has an email and a display name.
func ParsePatch(body []byte) (Patch, error) {
	return input.Parse(body, func(b signUpBody, errs *input.Errors) Patch {
		var p Patch
		if email, ok := parseEmail(errs, b.Email, false); ok {
			p.Email = &email
		}
		if name, ok := parseDisplayName(errs, b.DisplayName, false); ok {
			p.DisplayName = &name
		}
		return p
	})
}

// parseEmail trims and lower-cases the address and accepts it only if it is a bare
// address (no display name, no comments) as net/mail reads it. ok is false when the
// field is absent or invalid.
func parseEmail(errs *input.Errors, f input.Field[string], required bool) (string, bool) {
	const ptr = "/email"
	if !f.Present && !required {
		return "", false
	}
	if f.Null {
		errs.Add(ptr, "must not be null")
		return "", false
	}
	f.Value = strings.ToLower(strings.TrimSpace(f.Value))
	if !errs.Text(ptr, f, 1, MaxEmailLen, false) {
		return "", false
	}
	addr, err := mail.ParseAddress(f.Value)
	if err != nil || addr.Address != f.Value || addr.Name != "" {
		errs.Add(ptr, "must be an email address such as name@example.com")
		return "", false
	}
	return f.Value, true
}

func parseDisplayName(errs *input.Errors, f input.Field[string], required bool) (string, bool) {
	const ptr = "/display_name"
	if !f.Present && !required {
		return "", false
	}
	if f.Null {
		errs.Add(ptr, "must not be null")
		return "", false
	}
	f.Value = strings.TrimSpace(f.Value)
	if !errs.Text(ptr, f, 1, MaxDisplayNameLen, false) {
		return "", false
	}
	return f.Value, true
}
