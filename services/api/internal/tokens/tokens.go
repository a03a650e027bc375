// Package tokens issues and recognises bearer tokens. A token is "tdo_" followed by
// 32 random bytes in unpadded base64url; only its SHA-256 is ever stored, so a
// database leak reveals no usable token. The prefix lets secret scanners spot leaked
// tokens.
package tokens

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

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
