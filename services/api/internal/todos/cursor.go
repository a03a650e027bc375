package todos

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"

	"github.com/google/uuid"
)

// ErrInvalidCursor means a cursor was malformed, altered, or issued to another user or
// for another filter.
var ErrInvalidCursor = errors.New("invalid cursor")

// A cursor is base64url(after || check), where after is the id of the last todo of the
// previous page and check is the first 16 bytes of SHA-256(owner, filter, after). The
// check is not a secret MAC: a cursor grants nothing, since every query is scoped by
// the caller's token. It only makes a cursor that was edited, or replayed with other
// filters or by another user, fail loudly instead of paging through the wrong set.
const (
	checkLen  = 16
	cursorLen = 16 + checkLen
)

// EncodeCursor returns the cursor that continues a list of owner's todos matching f
// after the todo with id after.
func EncodeCursor(owner uuid.UUID, f Filter, after uuid.UUID) string {
	b := make([]byte, 0, cursorLen)
	b = append(b, after[:]...)
	b = append(b, cursorCheck(owner, f, after)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor returns the id a cursor continues after, or ErrInvalidCursor unless
// the cursor was issued for owner and f.
func DecodeCursor(s string, owner uuid.UUID, f Filter) (uuid.UUID, error) {
	// The length check also rejects CR and LF, which the decoder silently skips.
	if len(s) != base64.RawURLEncoding.EncodedLen(cursorLen) {
		return uuid.Nil, ErrInvalidCursor
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != cursorLen {
		return uuid.Nil, ErrInvalidCursor
	}
	after := uuid.UUID(b[:16])
	if subtle.ConstantTimeCompare(b[16:], cursorCheck(owner, f, after)) != 1 {
		return uuid.Nil, ErrInvalidCursor
	}
	return after, nil
}

func cursorCheck(owner uuid.UUID, f Filter, after uuid.UUID) []byte {
	h := sha256.New()
	h.Write([]byte("todos-cursor-v1"))
	h.Write(owner[:])
	h.Write([]byte(f.canonical()))
	h.Write(after[:])
	return h.Sum(nil)[:checkLen]
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
	return s
}
