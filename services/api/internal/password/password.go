// Package password hashes and checks users' passwords with argon2id
// (golang.org/x/crypto/argon2), the memory-hard function OWASP recommends.
//
// A hash is stored in the PHC string format, $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>
// (salt and key in unpadded standard base64), so each hash records the parameters it
// was made with: raising Params later leaves older hashes verifiable, and NeedsRehash
// tells when a user's hash should be replaced at their next sign-in.
//
// Hashing is CPU- and memory-heavy by design (the defaults cost 19 MiB and tens of
// milliseconds of one core). A Hasher runs at most Concurrency hashes at once; the
// others wait for a slot or for their context, so a flood of sign-ins queues instead
// of starving every other request of the API's cores and memory.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Length limits of a password, in characters. The upper bound keeps a hash's input
// bounded; OWASP asks for at least 64.
const (
	MinLen = 8
	MaxLen = 128
)

// ErrMismatch means the password is not the one the hash was made from.
var ErrMismatch = errors.New("password does not match")

// Params are argon2id's cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8  // lanes
}

// Default is OWASP's first recommended argon2id configuration (m=19 MiB, t=2, p=1).
var Default = Params{Memory: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
)

// Validate reports parameters argon2 cannot run or that are too weak to be meant.
func (p Params) Validate() error {
	if p.Memory < 8*uint32(p.Threads) || p.Time < 1 || p.Threads < 1 {
		return fmt.Errorf("argon2id parameters m=%d,t=%d,p=%d: want t>=1, p>=1 and m>=8*p KiB", p.Memory, p.Time, p.Threads)
	}
	return nil
}

// Hasher hashes and verifies passwords with bounded concurrency. It is safe for
// concurrent use.
type Hasher struct {
	params Params
	slots  chan struct{}
	// dummy is a hash of a random password, verified against when a sign-in names no
	// user with a password, so that the answer takes as long as for a real one.
	dummy string
}

// New returns a Hasher that makes hashes with p and runs at most concurrency hashes
// at once (at least 1).
func New(p Params, concurrency int) (*Hasher, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if concurrency < 1 {
		return nil, fmt.Errorf("hash concurrency %d: want at least 1", concurrency)
	}
	h := &Hasher{params: p, slots: make(chan struct{}, concurrency)}
	dummy, err := h.Hash(context.Background(), rand.Text())
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

// Hash returns the PHC string of a new hash of pw with a random salt. It blocks until
// a hashing slot is free, or fails with ctx's error.
func (h *Hasher) Hash(ctx context.Context, pw string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	key, err := h.derive(ctx, pw, salt, h.params, keyLen)
	if err != nil {
		return "", err
	}
	return encode(h.params, salt, key), nil
}

// Verify checks pw against encoded, a hash made by Hash with any parameters, in
// constant time. It fails with ErrMismatch when pw is wrong, and with another error
// when encoded is not an argon2id PHC string or ctx ends while it waits for a slot.
func (h *Hasher) Verify(ctx context.Context, encoded, pw string) error {
	p, salt, want, err := decode(encoded)
	if err != nil {
		return err
	}
	got, err := h.derive(ctx, pw, salt, p, uint32(len(want)))
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrMismatch
	}
	return nil
}

// VerifyNone spends the time of a Verify for a sign-in that names no user with a
// password, and always fails with ErrMismatch (or ctx's error).
func (h *Hasher) VerifyNone(ctx context.Context, pw string) error {
	if err := h.Verify(ctx, h.dummy, pw); err != nil {
		return err
	}
	return ErrMismatch // a random password was guessed: still no user
}

// NeedsRehash reports whether encoded was made with other parameters than h's, so
// that a sign-in that just verified it should store a new hash.
func (h *Hasher) NeedsRehash(encoded string) bool {
	p, _, key, err := decode(encoded)
	return err != nil || p != h.params || len(key) != keyLen
}

func (h *Hasher) derive(ctx context.Context, pw string, salt []byte, p Params, n uint32) ([]byte, error) {
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a password hashing slot: %w", ctx.Err())
	}
	defer func() { <-h.slots }()
	return argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, n), nil
}

func encode(p Params, salt, key []byte) string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// errFormat is wrapped by every decoding failure.
var errFormat = errors.New("not an argon2id PHC string")

// maxMemory bounds the memory a stored hash may ask for (4 GiB), so that a corrupted
// row cannot make a verification allocate without limit.
const maxMemory = 4 << 20

func decode(s string) (p Params, salt, key []byte, err error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errFormat
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, fmt.Errorf("%w: version %q", errFormat, parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, fmt.Errorf("%w: parameters %q", errFormat, parts[3])
	}
	if err := p.Validate(); err != nil || p.Memory > maxMemory {
		return p, nil, nil, fmt.Errorf("%w: parameters %q", errFormat, parts[3])
	}
	b64 := base64.RawStdEncoding
	if salt, err = b64.DecodeString(parts[4]); err != nil || len(salt) < 8 {
		return p, nil, nil, fmt.Errorf("%w: salt", errFormat)
	}
	if key, err = b64.DecodeString(parts[5]); err != nil || len(key) < 16 {
		return p, nil, nil, fmt.Errorf("%w: key", errFormat)
	}
	return p, salt, key, nil
}

// CheckLen reports whether pw has an acceptable length, in characters.
func CheckLen(pw string) bool {
	n := utf8.RuneCountInString(pw)
	return n >= MinLen && n <= MaxLen
}
