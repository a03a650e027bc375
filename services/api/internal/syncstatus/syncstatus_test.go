package syncstatus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/api/internal/syncstatus"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("read the outbox: %w", context.DeadlineExceeded), syncstatus.ErrorTimeout},
		{fmt.Errorf("stream X: %w", nats.ErrTimeout), syncstatus.ErrorTimeout},
		{fmt.Errorf("stream X: %w", jetstream.ErrStreamNotFound), syncstatus.ErrorNotFound},
		{fmt.Errorf("consumer p: %w", jetstream.ErrConsumerNotFound), syncstatus.ErrorNotFound},
		{fmt.Errorf("stream X: %w", nats.ErrConnectionClosed), syncstatus.ErrorUnavailable},
		{fmt.Errorf("read the outbox: %w", &pgconn.PgError{Code: "57P01"}), syncstatus.ErrorUnavailable},
		{fmt.Errorf("read the outbox: %w", &pgconn.PgError{Code: "42P01"}), syncstatus.ErrorFailed},
		{errors.New("something else"), syncstatus.ErrorFailed},
	} {
		if got := syncstatus.Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
