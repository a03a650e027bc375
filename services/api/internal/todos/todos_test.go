package todos_test

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
)

func TestApplyFollowsCompleted(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	td := todos.New{Title: "x", Priority: todos.Normal}.Todo(uuid.New(), uuid.New(), t0)
	yes, no := true, false
	t1 := t0.Add(time.Hour)
	done := td.Apply(todos.Patch{Completed: &yes}, t1)
	if !done.Completed || done.CompletedAt == nil || !done.CompletedAt.Equal(t1) || done.Version != 2 {
		t.Fatalf("complete: %+v", done)
	}
	again := done.Apply(todos.Patch{Completed: &yes}, t1.Add(time.Hour))
	if !again.CompletedAt.Equal(t1) || again.Version != 3 {
		t.Fatalf("completing twice moved completed_at: %+v", again)
	}
	open := again.Apply(todos.Patch{Completed: &no}, t1)
	if open.Completed || open.CompletedAt != nil {
		t.Fatalf("reopen: %+v", open)
	}
}

func TestParsePatchDistinguishesAbsentAndNull(t *testing.T) {
	t.Parallel()
	p, err := todos.ParsePatch([]byte(`{"notes":null,"due":"2030-01-01T00:00:00.0000009Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !p.SetNotes || p.Notes != nil || !p.SetDue || p.Due == nil || p.Due.Nanosecond() != 0 || p.Title != nil {
		t.Fatalf("%+v", p)
	}
	p, err = todos.ParsePatch([]byte(`{}`))
	if err != nil || p.SetNotes || p.SetDue {
		t.Fatalf("empty patch: %+v %v", p, err)
	}
}

// checkTodo asserts the invariants of any todo built from accepted input.
func checkTodo(t *testing.T, td todos.Todo) {
	t.Helper()
	if n := utf8.RuneCountInString(td.Title); n < 1 || n > todos.MaxTitleLen || strings.TrimSpace(td.Title) != td.Title {
		t.Fatalf("title %q", td.Title)
	}
	if td.Notes != nil && utf8.RuneCountInString(*td.Notes) > todos.MaxNotesLen {
		t.Fatal("notes too long")
	}
	if !td.Priority.Valid() || td.Completed != (td.CompletedAt != nil) {
		t.Fatalf("%+v", td)
	}
	if td.Due != nil && (td.Due.Location() != time.UTC || td.Due.Nanosecond()%1000 != 0) {
		t.Fatalf("due %v", td.Due)
	}
}

var seeds = []string{
	`{"title":"buy milk"}`,
	`{"title":"x","notes":"a\nb","completed":true,"due":"2030-01-02T03:04:05+01:00","priority":"high"}`,
	`{"title":null,"notes":null,"due":null,"priority":null,"completed":null}`,
	`{"title":"","priority":"urgent","due":"tomorrow","completed":"yes","notes":5}`,
	`{"title":"a\u0000b"}`, `{"Title":"x"}`, `{"title":"x"}{}`, `[]`, `null`, ``, "{\"title\":\"\xff\"}",
	`{"title":"x","title":5}`, `{"due":"9999-12-31T23:59:59.999999999-23:59"}`,
}

func FuzzParseNew(f *testing.F) {
	apitest.FuzzBody(f, seeds, todos.ParseNew, func(t *testing.T, n todos.New) {
		checkTodo(t, n.Todo(uuid.New(), uuid.New(), time.Now().UTC().Truncate(todos.Precision)))
	})
}

func FuzzParsePatch(f *testing.F) {
	apitest.FuzzBody(f, seeds, todos.ParsePatch, func(t *testing.T, p todos.Patch) {
		base := todos.New{Title: "base", Priority: todos.Low}.Todo(uuid.New(), uuid.New(), time.Unix(0, 0).UTC())
		checkTodo(t, base.Apply(p, time.Now().UTC().Truncate(todos.Precision)))
	})
}

// cursorKey is a fixed key, so that the checked-in corpus stays meaningful.
var cursorKey = []byte("0123456789abcdef0123456789abcdef")

func FuzzCursor(f *testing.F) {
	owner := uuid.MustParse("0190a8a4-3c6e-7b2e-9a6e-3f0c2d1e4b5a")
	yes := true
	c, err := todos.NewCursors(cursorKey)
	if err != nil {
		f.Fatal(err)
	}
	valid := c.Encode(owner, todos.Filter{Completed: &yes}, owner)
	for _, s := range []string{valid, valid[:10], valid + "A", "", "%%%", strings.Repeat("A", 43)} {
		f.Add(s)
	}
	other, err := todos.NewCursors([]byte(strings.Repeat("k", todos.MinCursorKeyLen)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		f := todos.Filter{Completed: &yes}
		after, err := c.Decode(s, owner, f)
		if err != nil {
			if !errors.Is(err, todos.ErrInvalidCursor) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if c.Encode(owner, f, after) != s {
			t.Fatalf("accepted a cursor that does not re-encode to itself: %q", s)
		}
		if _, err := c.Decode(s, owner, todos.Filter{}); err == nil {
			t.Fatal("cursor accepted with other filters")
		}
		if _, err := c.Decode(s, uuid.New(), f); err == nil {
			t.Fatal("cursor accepted for another user")
		}
		if _, err := other.Decode(s, owner, f); err == nil {
			t.Fatal("cursor accepted under another key")
		}
	})
}

func TestCursorKeys(t *testing.T) {
	t.Parallel()
	if _, err := todos.NewCursors(make([]byte, todos.MinCursorKeyLen-1)); err == nil {
		t.Fatal("short key accepted")
	}
	owner, after := uuid.New(), uuid.New()
	key := append([]byte(nil), cursorKey...)
	a, err := todos.NewCursors(key)
	if err != nil {
		t.Fatal(err)
	}
	key[0] ^= 1 // the codec keeps its own copy
	b, err := todos.NewCursors(cursorKey)
	if err != nil {
		t.Fatal(err)
	}
	// The same key on another replica (or after a restart) reads the cursor.
	if got, err := b.Decode(a.Encode(owner, todos.Filter{}, after), owner, todos.Filter{}); err != nil || got != after {
		t.Fatalf("same key: %v %v", got, err)
	}
	c, err := todos.NewCursors(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decode(a.Encode(owner, todos.Filter{}, after), owner, todos.Filter{}); !errors.Is(err, todos.ErrInvalidCursor) {
		t.Fatalf("other key: %v", err)
	}
}
