package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/clientaddr"
	"github.com/outboxtodo/outboxtodo/services/api/internal/password"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/services/api/internal/ratelimit"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
)

// signInLimits bound password guesses: per email address (and per user, for the
// current password of a password change), so that one account cannot be guessed at
// from many addresses, and per client address, so that one client cannot try many
// accounts. Both are per replica. Every attempt counts, right or wrong: counting only
// failures would mean hashing before the limit is checked, and the limit is there to
// bound the hashing too.
type signInLimits struct {
	perEmail, perAddress *ratelimit.Keyed
}

func newSignInLimits(perEmail, perAddress int, window time.Duration, maxKeys int) (signInLimits, error) {
	if perEmail == 0 {
		perEmail = 10
	}
	if perAddress == 0 {
		perAddress = 30
	}
	if window == 0 {
		window = 15 * time.Minute
	}
	if maxKeys == 0 {
		maxKeys = 100_000
	}
	var (
		l   signInLimits
		err error
	)
	if l.perEmail, err = ratelimit.New(ratelimit.Config{PerSecond: float64(perEmail) / window.Seconds(), Burst: perEmail, MaxKeys: maxKeys}); err != nil {
		return l, fmt.Errorf("SignInPerEmail: %w", err)
	}
	if l.perAddress, err = ratelimit.New(ratelimit.Config{PerSecond: float64(perAddress) / window.Seconds(), Burst: perAddress, MaxKeys: maxKeys}); err != nil {
		return l, fmt.Errorf("SignInPerAddress: %w", err)
	}
	return l, nil
}

// errInvalidCredentials is the one answer to a sign-in that fails, whether the email
// is unknown, has no password or the password is wrong.
var errInvalidCredentials = newError(kindInvalidCredentials, "the email address or the password is wrong")

// signInLimited answers 429 with Retry-After when d is a refusal.
func signInLimited(d ratelimit.Decision, what string) error {
	if d.Allowed {
		return nil
	}
	return &retryAfterError{wait: d.RetryAfter, err: newError(kindRateLimited, "too many sign-in attempts for this %s; retry later", what)}
}

// signIn exchanges an email address and password for a new token. Its answer has the
// shape of sign-up's: the user and the token, shown once. A sign-in is not
// idempotent (a retry issues another token) and takes no Idempotency-Key: a replay
// could not show the token anyway. This is also how a client recovers from a sign-up
// whose answer was lost: the replay of a sign-up answers without a token (only its
// hash is stored), so a user who set a password at sign-up signs in instead.
//
// The answer and, as closely as the hashing makes it, its time are the same whether
// the email is unknown, has no password or has a wrong one: each verifies one argon2id
// hash of the same cost.
func (a *api) signIn(w http.ResponseWriter, r *http.Request) error {
	if addr, ok := a.addrs.Addr(r); ok {
		if err := signInLimited(a.signIns.perAddress.Take("ip:"+clientaddr.Key(addr)), "client address"); err != nil {
			return err
		}
	}
	in, err := readParsed(r, a.maxBody, users.ParseSignIn, mediaJSON)
	if err != nil {
		return err
	}
	if err := signInLimited(a.signIns.perEmail.Take("email:"+in.Email), "email address"); err != nil {
		return err
	}
	ctx := r.Context()
	id, hash, err := a.store.Credentials(ctx, in.Email)
	switch {
	case errors.Is(err, users.ErrNotFound):
		err = a.passwords.VerifyNone(ctx, in.Password)
	case err != nil:
		return err
	default:
		err = a.passwords.Verify(ctx, hash, in.Password)
	}
	if errors.Is(err, password.ErrMismatch) {
		return errInvalidCredentials
	}
	if err != nil {
		return err
	}
	if a.passwords.NeedsRehash(hash) {
		a.rehash(ctx, id, hash, in.Password)
	}
	u, err := a.store.User(ctx, id)
	if err != nil {
		return err
	}
	now := a.store.Now()
	secret, token, err := tokens.Issue(id, now, tokens.DefaultExpiry(now, a.tokenTTL))
	if err != nil {
		return fmt.Errorf("new token id: %w", err)
	}
	evicted, err := a.store.CreateSignInToken(ctx, token)
	if err != nil {
		return err
	}
	for _, h := range evicted {
		a.tokens.Forget(h)
	}
	w.Header().Set("Location", "/v1/users/me")
	return writeJSON(w, http.StatusCreated, newSignUpResponse(u, secret, token))
}

// rehash replaces a hash made with older parameters by one made with the current
// ones, now that the password is known. A failure costs nothing but another try at
// the next sign-in, so it is logged, not answered.
func (a *api) rehash(ctx context.Context, id uuid.UUID, old, pw string) {
	hash, err := a.passwords.Hash(ctx, pw)
	if err == nil {
		err = a.store.SetPassword(ctx, id, old, hash)
	}
	if err != nil && !errors.Is(err, users.ErrPasswordChanged) {
		a.log.WarnContext(ctx, "rehash password", "error", err, "request_id", requestID(ctx))
	}
}

// setPassword sets the caller's password, or changes it: a user who has one must send
// it as current_password, and those guesses count against the per-email limit of
// sign-in (keyed by the user). The user's tokens stay valid; to sign other devices
// out, revoke their tokens (GET and DELETE /v1/users/me/tokens).
func (a *api) setPassword(w http.ResponseWriter, r *http.Request) error {
	in, err := readParsed(r, a.maxBody, users.ParseNewPassword, mediaJSON)
	if err != nil {
		return err
	}
	ctx, id := r.Context(), userID(r.Context())
	old, err := a.store.PasswordHash(ctx, id)
	if err != nil {
		return err
	}
	if old != "" {
		if err := signInLimited(a.signIns.perEmail.Take("user:"+id.String()), "user"); err != nil {
			return err
		}
		if in.Current == "" {
			return currentPasswordError("is required to change a password")
		}
		if err := a.passwords.Verify(ctx, old, in.Current); errors.Is(err, password.ErrMismatch) {
			return currentPasswordError("does not match the current password")
		} else if err != nil {
			return err
		}
	}
	hash, err := a.passwords.Hash(ctx, in.Password)
	if err != nil {
		return err
	}
	if err := a.store.SetPassword(ctx, id, old, hash); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func currentPasswordError(detail string) error {
	e := newError(kindValidation, "the request has invalid fields; see errors")
	e.fields = []problem.FieldError{{Pointer: "/current_password", Detail: detail}}
	return e
}

// signUpResponse is the answer to sign-up and sign-in: the user and their new token.
// Token (the secret) is omitted from the stored response of an idempotent sign-up
// (only its hash is ever stored), so a replay answers the same user and token id
// without it.
type signUpResponse struct {
	User      users.User `json:"user"`
	Token     string     `json:"token,omitempty"`
	TokenID   uuid.UUID  `json:"token_id"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func newSignUpResponse(u users.User, secret string, t tokens.Token) signUpResponse {
	return signUpResponse{User: u, Token: secret, TokenID: t.ID, ExpiresAt: t.ExpiresAt}
}

// withoutPassword is a sign-up body with its password removed, for the idempotency
// fingerprint, which is stored: a fast hash of a body that held the password would
// be a fast hash of the password. Another password with the same key and otherwise the
// same body replays the first sign-up, which shows no token either way. A body that
// is not a JSON object is returned as it is: it never gets as far as being stored.
func withoutPassword(body []byte) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return body
	}
	if _, ok := m["password"]; !ok {
		return body
	}
	delete(m, "password")
	out, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return out
}
