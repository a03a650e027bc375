package todos

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
)

// ErrInvalidCursor means a cursor was malformed, altered, minted with another key, or
// issued to another user or for another filter.
var ErrInvalidCursor = errors.New("invalid cursor")

// A cursor is base64url(after || tag), where after is the id of the last todo of the
// previous page and tag is the first 16 bytes of HMAC-SHA256(key, owner, filter,
// after). Every query is scoped by the caller's token anyway, so a forged cursor could
// only skip through the caller's own todos; the MAC makes cursors opaque and
// unforgeable regardless, so that a cursor that was edited, or replayed by another
// user or with other filters, fails loudly instead of paging through the wrong set.
const (
	tagLen    = 16 // 128 bits: forging one takes 2^128 guesses
	cursorLen = 16 + tagLen
	// MinCursorKeyLen is the shortest accepted key: as long as the HMAC's output.
	MinCursorKeyLen = 32
)

// Cursors mints and checks the pagination cursors of todo lists with one key. Every
// replica of the API must share the key for a cursor from one to work on another.
type Cursors struct {
	key []byte
}

// NewCursors returns a codec keyed by key (at least MinCursorKeyLen bytes).
func NewCursors(key []byte) (*Cursors, error) {
	if len(key) < MinCursorKeyLen {
		return nil, fmt.Errorf("cursor key of %d bytes: want at least %d", len(key), MinCursorKeyLen)
	}
	return &Cursors{key: append([]byte(nil), key...)}, nil
}

// Encode returns the cursor that continues a list of owner's todos matching f after
// the todo with id after.
func (c *Cursors) Encode(owner uuid.UUID, f Filter, after uuid.UUID) string {
	b := make([]byte, 0, cursorLen)
	b = append(b, after[:]...)
	b = append(b, c.tag(owner, f, after)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode returns the id a cursor continues after, or ErrInvalidCursor unless the
// cursor was minted with this key for owner and f.
func (c *Cursors) Decode(s string, owner uuid.UUID, f Filter) (uuid.UUID, error) {
	// The length check also rejects CR and LF, which the decoder silently skips.
	if len(s) != base64.RawURLEncoding.EncodedLen(cursorLen) {
		return uuid.Nil, ErrInvalidCursor
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != cursorLen {
		return uuid.Nil, ErrInvalidCursor
	}
	after := uuid.UUID(b[:16])
	if !hmac.Equal(b[16:], c.tag(owner, f, after)) {
		return uuid.Nil, ErrInvalidCursor
	}
	return after, nil
}

func (c *Cursors) tag(owner uuid.UUID, f Filter, after uuid.UUID) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("todos-cursor-v2\x00"))
	m.Write(owner[:])
	m.Write([]byte(f.canonical()))
	m.Write(after[:])
	return m.Sum(nil)[:tagLen]
}

// canonical is a stable text form of f, so that equal filters give equal cursors.
func (f Filter) canonical() string {
	s := "c="
	if f.Completed != nil {
		s += strconv.FormatBool(*f.Completed)
	}
	s += ";b="
	if f.DueBefore != nil {
		s += strconv.FormatInt(f.DueBefore.UnixMicro(), 10)
	}
	s += ";a="
	if f.DueAfter != nil {
		s += strconv.FormatInt(f.DueAfter.UnixMicro(), 10)
	}
	// Only when set, so that the cursors of lists without it stay valid.
	if f.UpdatedSince != nil {
		s += ";u=" + strconv.FormatInt(f.UpdatedSince.UnixMicro(), 10)
	}
	return s
}
