// Package consistency is the read-your-writes token: the position a write reached in
// the owner's aggregates, which a read served by the read model can wait for.
//
// A write names the versions it produced: the user document's version (user writes)
// and the owner's stats version (todo writes, whose events all carry the owner's full
// stats snapshot with its version; see event.Stats). The read model has applied the
// write once its documents are at those versions or later. Versions rather than stream
// sequences: a write knows them at commit, before the publisher has relayed it, and a
// version check is one lookup by _id, which the FerretDB stand-in serves from an index.
//
// The token is opaque to clients: "c1.<owner uuid>.<user version>.<stats version>",
// with 0 for a version the write does not name. Only characters that need no escaping
// in a header or a query string.
package consistency

import (
	"errors"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Headers of the protocol: the token a write answers (and a read sends back), and
// whether the read includes it.
const (
	TokenHeader = "Consistency-Token"
	StateHeader = "Consistency"
	// QueryParam carries the token for clients that cannot set headers.
	QueryParam = "consistency_token"
)

// The values of StateHeader.
const (
	Fresh = "fresh"
	Stale = "stale"
)

const prefix = "c1"

// ErrMalformed is returned for a token that this API did not issue.
var ErrMalformed = errors.New("malformed consistency token")

// Token is a position in one owner's aggregates.
type Token struct {
	Owner        uuid.UUID
	UserVersion  int64 // 0: not named
	StatsVersion int64 // 0: not named
}

// String encodes t.
func (t Token) String() string {
	return prefix + "." + t.Owner.String() + "." + strconv.FormatInt(t.UserVersion, 10) + "." +
		strconv.FormatInt(t.StatsVersion, 10)
}

// Parse decodes a token made by String.
func Parse(s string) (Token, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != prefix || len(parts[1]) != 36 {
		return Token{}, ErrMalformed
	}
	owner, err := uuid.Parse(parts[1])
	if err != nil {
		return Token{}, ErrMalformed
	}
	uv, err1 := strconv.ParseInt(parts[2], 10, 64)
	sv, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || uv < 0 || sv < 0 {
		return Token{}, ErrMalformed
	}
	return Token{Owner: owner, UserVersion: uv, StatsVersion: sv}, nil
}

// ReachedBy reports whether documents at the versions user and stats include t.
func (t Token) ReachedBy(user, stats int64) bool {
	return user >= t.UserVersion && stats >= t.StatsVersion
}
