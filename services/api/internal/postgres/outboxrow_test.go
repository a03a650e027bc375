package postgres

import (
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
)

// The API writes its outbox rows with a statement of its own (insertOutboxSQL, with
// outboxArgs), the other writers (loadgen's seed, the tests) in shared/outbox's row
// format: both must fill the same columns, in the same order, with the same values.
func TestOutboxInsertMatchesTheRowFormat(t *testing.T) {
	t.Parallel()
	m := regexp.MustCompile(`INSERT INTO outbox \(([^)]*)\)`).FindStringSubmatch(insertOutboxSQL)
	if m == nil {
		t.Fatal("insertOutboxSQL names no outbox columns")
	}
	if cols := strings.Fields(strings.ReplaceAll(m[1], ",", " ")); !slices.Equal(cols, outbox.Columns) {
		t.Fatalf("insertOutboxSQL fills %v, outbox.Columns are %v", cols, outbox.Columns)
	}
	e, err := event.New(event.TodoCreated, uuid.New(), uuid.New(), 3, time.Now().UTC(), event.TraceContext{}, map[string]string{"title": "x"})
	if err != nil {
		t.Fatal(err)
	}
	args, err := outboxArgs([]event.Envelope{e})
	if err != nil {
		t.Fatal(err)
	}
	row, err := outbox.Row(e)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != len(row) {
		t.Fatalf("%d parameter arrays, %d row values", len(args), len(row))
	}
	for i, want := range row {
		if u, ok := want.(uuid.UUID); ok {
			want = [16]byte(u) // outboxArgs passes raw bytes, which pgx encodes directly
		}
		if got := reflect.ValueOf(args[i]).Index(0).Interface(); got != want {
			t.Errorf("%s: the API writes %v (%T), the row format %v (%T)", outbox.Columns[i], got, got, want, want)
		}
	}
}
