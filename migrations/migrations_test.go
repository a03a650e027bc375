package migrations_test

import (
	"context"
	"testing"

	"github.com/outboxtodo/outboxtodo/migrations"
	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
)

func TestUpIsIdempotent(t *testing.T) {
	t.Parallel()
	url := dbtest.New(t) // applies every migration once
	ctx := context.Background()
	applied, err := migrations.Up(ctx, url)
	if err != nil {
		t.Fatalf("second up: %v", err)
	}
	if len(applied) != 0 {
		t.Fatalf("second up applied %d migrations, want 0", len(applied))
	}
	current, latest, err := migrations.Version(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if current != latest || latest < 1 {
		t.Fatalf("version current=%d latest=%d", current, latest)
	}
}
