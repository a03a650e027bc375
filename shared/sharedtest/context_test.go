package sharedtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestContext(t *testing.T) {
	t.Parallel()
	var ctx context.Context
	t.Run("bounded", func(t *testing.T) {
		ctx = sharedtest.Context(t, time.Hour)
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > time.Hour || time.Until(dl) < 59*time.Minute {
			t.Fatalf("deadline %v (set %v), want an hour from now", dl, ok)
		}
		if ctx.Err() != nil {
			t.Fatalf("ended early: %v", ctx.Err())
		}
	})
	if ctx.Err() == nil {
		t.Fatal("the context outlived its test")
	}
}
