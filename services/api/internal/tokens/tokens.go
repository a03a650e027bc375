// Package tokens issues and recognises bearer tokens. A token is "tdo_" followed by
// 32 random bytes in unpadded base64url; only its SHA-256 is ever stored, so a
// database leak reveals no usable token. The prefix lets secret scanners spot leaked
// tokens.
//
// A token is checked by looking its hash up in an index, not by comparing it with a
// stored secret, and that lookup is timing-safe without a constant-time comparison:
// the only values compared are SHA-256 digests of what the client sent. Timing can at
// best tell an attacker how many leading bytes of the digest of a guess match some
// stored digest, and producing a token whose digest extends such a match is a
// preimage search on SHA-256; a token also has 256 random bits, so there is nothing
// to guess byte by byte.
package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/input"
)

// MaxPerUser bounds the live tokens of one user, so that issuing tokens cannot grow
// the table without limit. Expired tokens do not count. A user at the bound lists
// their tokens and revokes one by id, so tokens whose secret was lost (a response
// that never arrived) cannot lock the user out of issuing.
const MaxPerUser = 20

// LastUsedPrecision is the precision of Token.LastUsedAt: recording use costs one
// write per token and period, not one per request.
const LastUsedPrecision = time.Hour

// Errors.
var (
	// ErrTooMany means the user holds MaxPerUser live tokens already.
	ErrTooMany = errors.New("too many tokens")
	// ErrNotFound means the user has no live token with that id.
	ErrNotFound = errors.New("token not found")
)

// Token is what is known of a token besides its secret, which is never stored.
type Token struct {
	ID     uuid.UUID `json:"id"`
	UserID uuid.UUID `json:"-"`
	// Hash is the stored form of the secret (see Hash).
	Hash      []byte     `json:"-"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	// LastUsedAt is the start of the LastUsedPrecision period in which the token last
	// authenticated a request; nil when it never did.
	LastUsedAt *time.Time `json:"last_used_at"`
}

// Issue returns the secret of a new token of owner and the token to store. now must
// already be truncated to the database's precision; expiresAt nil means never.
func Issue(owner uuid.UUID, now time.Time, expiresAt *time.Time) (secret string, t Token, err error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", Token{}, err
	}
	secret, hash := New()
	return secret, Token{ID: id, UserID: owner, Hash: hash, CreatedAt: now, ExpiresAt: expiresAt}, nil
}

// Expired reports whether t no longer authenticates at now.
func (t Token) Expired(now time.Time) bool {
	return t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)
}

// UsePeriod is the value of LastUsedAt for a use at now.
func UsePeriod(now time.Time) time.Time {
	return now.UTC().Truncate(LastUsedPrecision)
}

// NeedsUseRecorded reports whether a use at now moves LastUsedAt.
func (t Token) NeedsUseRecorded(now time.Time) bool {
	return t.LastUsedAt == nil || t.LastUsedAt.Before(UsePeriod(now))
}

// Prefix starts every token.
const Prefix = "tdo_"

// encodedLen is the length of a token: the prefix and 32 bytes in base64url.
var encodedLen = len(Prefix) + base64.RawURLEncoding.EncodedLen(32)

// New returns a fresh token and the hash to store for it.
func New() (token string, hash []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails; it crashes the program instead
	token = Prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, Hash(token)
}

// Hash is the stored form of token.
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// WellFormed reports whether s has the shape of a token, so that garbage is turned
// away without a database round trip.
func WellFormed(s string) bool {
	if len(s) != encodedLen || !strings.HasPrefix(s, Prefix) {
		return false
	}
	// The decoded length matters: the decoder skips CR and LF.
	b, err := base64.RawURLEncoding.Strict().DecodeString(s[len(Prefix):])
	return err == nil && len(b) == 32
}

// DefaultExpiry is when a token issued at now expires unless its request asks for
// earlier: after ttl, or never (nil) when ttl is 0.
func DefaultExpiry(now time.Time, ttl time.Duration) *time.Time {
	if ttl <= 0 {
		return nil
	}
	t := now.Add(ttl)
	return &t
}

// timePrecision is the resolution of timestamps in the database.
const timePrecision = time.Microsecond

type issueBody struct {
	ExpiresAt input.Field[string] `json:"expires_at"`
}

// ParseIssue parses the optional body of a token issue ({"expires_at": RFC 3339}, or
// nothing) and returns when the new token expires, nil for never. ttl is the lifetime
// of a token whose request names no expiry (0: it never expires); a request may ask
// for an earlier expiry than that, never a later one. now must already be truncated to
// the database's precision.
func ParseIssue(body []byte, now time.Time, ttl time.Duration) (*time.Time, error) {
	expires := DefaultExpiry(now, ttl)
	if len(body) == 0 {
		return expires, nil
	}
	var b issueBody
	if err := input.Decode(body, &b); err != nil {
		return nil, err
	}
	if !b.ExpiresAt.Present {
		return expires, nil
	}
	const ptr = "/expires_at"
	var errs input.Errors
	t, err := time.Parse(time.RFC3339Nano, b.ExpiresAt.Value)
	t = t.UTC().Truncate(timePrecision)
	switch {
	case b.ExpiresAt.Null || b.ExpiresAt.Invalid || err != nil:
		errs.Add(ptr, "must be an RFC 3339 date-time such as 2030-01-02T15:04:05Z")
	case !t.After(now):
		errs.Add(ptr, "must be in the future")
	case expires != nil && t.After(*expires):
		errs.Add(ptr, "must be at most "+ttl.String()+" from now, the longest a token may live here")
	default:
		return &t, nil
	}
	return nil, errs.Err()
}
