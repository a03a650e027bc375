package drift_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/shared/drift"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// Compare reports a document missing from the read model, one it holds that the
// source lacks, and one that differs, and ignores what the read model cannot keep:
// sub-millisecond times.
func TestCompare(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	u, missing, extra := uuid.New(), uuid.New(), uuid.New()
	want, got := drift.NewSnapshot(), drift.NewSnapshot()
	user := event.UserData{ID: u, Email: "u@example.com", DisplayName: "U", Version: 2, CreatedAt: now, UpdatedAt: now}
	want.AddUser(user)
	user.CreatedAt = now.Truncate(time.Millisecond)
	got.AddUser(user)
	want.AddTodo(event.TodoData{ID: missing, UserID: u, Title: "t", Priority: "low", Version: 1, CreatedAt: now, UpdatedAt: now})
	got.AddStats(extra, event.Stats{Version: 1})
	want.AddStats(u, event.Stats{Open: 1, Version: 3})
	got.AddStats(u, event.Stats{Open: 1, Version: 2})

	var kinds []string
	for _, d := range drift.Compare(want, got) {
		kinds = append(kinds, d.Collection+" "+d.ID+" "+d.Kind)
	}
	wantKinds := []string{"todos " + missing.String() + " missing", "user_stats " + u.String() + " differs", "user_stats " + extra.String() + " extra"}
	if !slices.Equal(kinds, wantKinds) {
		t.Fatalf("differences %v, want %v", kinds, wantKinds)
	}
}
