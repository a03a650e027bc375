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
)

// MaxPerUser bounds the live tokens of one user, so that issuing tokens cannot grow
// the table without limit; a user rotates by revoking the old token.
const MaxPerUser = 20

// ErrTooMany means the user holds MaxPerUser tokens already.
var ErrTooMany = errors.New("too many tokens")

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
