package postgres_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// TestPasswordChangeIsCompareAndSet: of concurrent changes from the same hash exactly
// one wins; a first password cannot be set twice; credentials are found by email only
// for a user with a password; the hash goes with its user.
func TestPasswordChangeIsCompareAndSet(t *testing.T) {
	t.Parallel()
	ctx, s, pool := newStore(t, false)
	u := createUser(ctx, t, s, users.SignUp{Email: "p@example.com", DisplayName: "P"})
	if _, _, err := s.Credentials(ctx, u.Email); !errors.Is(err, users.ErrNotFound) {
		t.Fatalf("credentials of a user without a password: %v", err)
	}
	if err := s.SetPassword(ctx, u.ID, "", "h0"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword(ctx, u.ID, "", "again"); !errors.Is(err, users.ErrPasswordChanged) {
		t.Fatalf("a second first password: %v", err)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		winner []string
	)
	for i := range 8 {
		wg.Go(func() {
			hash := fmt.Sprint("h", i+1)
			err := s.SetPassword(ctx, u.ID, "h0", hash)
			switch {
			case err == nil:
				mu.Lock()
				winner = append(winner, hash)
				mu.Unlock()
			case !errors.Is(err, users.ErrPasswordChanged):
				t.Errorf("change to %s: %v", hash, err)
			}
		})
	}
	wg.Wait()
	if len(winner) != 1 {
		t.Fatalf("%d concurrent changes from one hash won: %v", len(winner), winner)
	}
	id, hash, err := s.Credentials(ctx, "p@example.com")
	if err != nil || id != u.ID || hash != winner[0] {
		t.Fatalf("credentials: %v %q %v; want %s %q", id, hash, err, u.ID, winner[0])
	}
	if _, err := s.DeleteUser(ctx, u.ID, 0, event.TraceContext{}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM user_passwords`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d password hashes after the user's deletion (%v)", n, err)
	}
	if err := s.SetPassword(ctx, u.ID, "", "h9"); !errors.Is(err, users.ErrNotFound) {
		t.Fatalf("a password for a deleted user: %v", err)
	}
}
