// Package idempotency holds the rules of the Idempotency-Key header on POST requests:
// which keys are acceptable, how a request is fingerprinted, how long a key lives and
// what is stored about the first response.
//
// The key row is written in the transaction of the write it guards, so a stored
// response always describes a committed write, and two concurrent requests with one
// key serialize on the row's primary key: the loser rolls back and replays the winner.
package idempotency

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"time"
)

// Header is the request header that carries the key.
const Header = "Idempotency-Key"

// TTL is how long a key is honoured. Older keys are ignored and removed by a sweeper.
const TTL = 24 * time.Hour

// MaxKeyLen bounds a key, in bytes.
const MaxKeyLen = 255

// Errors.
var (
	ErrInvalidKey = errors.New("Idempotency-Key must be 1 to 255 printable ASCII characters")
	// ErrRace means another request with the same key committed first; replay its
	// response instead.
	ErrRace = errors.New("idempotency key used by a concurrent request")
)

// UserScope is the scope of keys sent by an authenticated user: keys of different
// users never collide.
func UserScope(userID string) string { return "user:" + userID }

// SignUpScope is the scope of a key sent with sign-up, which has no user yet: the
// fingerprint of the request, so that only the same key with the same body meets a
// stored response, and unrelated clients that pick the same key never collide.
func SignUpScope(fingerprint []byte) string { return "sign-up:" + hex.EncodeToString(fingerprint) }

// ValidKey reports whether k is an acceptable key.
func ValidKey(k string) bool {
	if k == "" || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// Fingerprint identifies a request: the same key with a different fingerprint is a
// client bug, answered with 422.
func Fingerprint(method, path string, body []byte) []byte {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(body)
	return h.Sum(nil)
}

// Response is what a replay answers: the status, the headers worth replaying and the
// body.
type Response struct {
	Status  int
	Headers http.Header
	Body    []byte
}

// Record is a key with the fingerprint of its request and the first response.
type Record struct {
	Scope       string
	Key         string
	Fingerprint []byte
	Response    Response
}
