package event

import (
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// DefaultSubjectPrefix is the first token of every event subject.
const DefaultSubjectPrefix = "todo.events"

// Subject is the JetStream subject of e:
//
//	<prefix>.<aggregate_type>.<owner_id>.<aggregate_id>
//
// so that wildcards select one user's events (<prefix>.*.<owner_id>.*), one aggregate's
// events (<prefix>.todo.*.<todo_id>) or one aggregate type (<prefix>.user.>).
func Subject(prefix string, e Envelope) string {
	return fmt.Sprintf("%s.%s.%s.%s", prefix, e.AggregateType, e.OwnerID, e.AggregateID)
}

// StreamSubjects is the subject filter a stream needs to hold every event.
func StreamSubjects(prefix string) string { return prefix + ".>" }

// OwnerFilter selects every event of one user: their own changes and their todos'.
func OwnerFilter(prefix string, owner uuid.UUID) string {
	return fmt.Sprintf("%s.*.%s.*", prefix, owner)
}

// AggregateFilter selects every event of one aggregate.
func AggregateFilter(prefix, aggregateType string, id uuid.UUID) string {
	return fmt.Sprintf("%s.%s.*.%s", prefix, aggregateType, id)
}

// ValidSubjectPrefix reports whether p can prefix subjects: dot-separated tokens
// without wildcards or whitespace.
func ValidSubjectPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}
