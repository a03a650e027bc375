package password

import (
	"context"
	"errors"
	"strings"
	"testing"
)

var cheap = Params{Memory: 64, Time: 1, Threads: 1}

func TestHashRecordsItsParametersAndVerifies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, err := New(cheap, 2)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q does not record its parameters in the PHC format", enc)
	}
	again, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if again == enc {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	if err := h.Verify(ctx, enc, "correct horse"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	for _, wrong := range []string{"correct hors", "correct horse ", "Correct horse", ""} {
		if err := h.Verify(ctx, enc, wrong); !errors.Is(err, ErrMismatch) {
			t.Errorf("Verify(%q) = %v, want ErrMismatch", wrong, err)
		}
	}
	if err := h.VerifyNone(ctx, "correct horse"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("VerifyNone = %v, want ErrMismatch", err)
	}
	if h.NeedsRehash(enc) {
		t.Fatal("a hash made with the current parameters needs a rehash")
	}

	// Raised parameters: the old hash still verifies, and asks to be remade.
	raised, err := New(Params{Memory: 128, Time: 2, Threads: 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := raised.Verify(ctx, enc, "correct horse"); err != nil {
		t.Fatalf("a hash made with older parameters: %v", err)
	}
	if !raised.NeedsRehash(enc) {
		t.Fatal("a hash made with older parameters needs no rehash")
	}
}

func TestVerifyRefusesWhatIsNotAnArgon2idHash(t *testing.T) {
	t.Parallel()
	h, err := New(cheap, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, enc := range []string{
		"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw", // more memory than any hash may ask
		"$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		"$argon2id$v=19$m=64,t=1,p=1$!!$a2V5a2V5a2V5a2V5a2V5aw",
	} {
		if err := h.Verify(context.Background(), enc, "pw"); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("Verify(%q) = %v, want a format error", enc, err)
		}
	}
}

// TestHashingWaitsForASlot: with every slot taken, a hash waits, and gives up when its
// context ends, rather than running beyond the bound.
func TestHashingWaitsForASlot(t *testing.T) {
	t.Parallel()
	h, err := New(cheap, 1)
	if err != nil {
		t.Fatal(err)
	}
	h.slots <- struct{}{} // the one slot, taken
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := h.Hash(ctx, "correct horse"); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Hash with every slot taken = %v, want context.Canceled", err)
	}
	<-h.slots
	if _, err := h.Hash(context.Background(), "correct horse"); err != nil {
		t.Fatalf("Hash with the slot free: %v", err)
	}
}

func TestCheckLenCountsCharacters(t *testing.T) {
	t.Parallel()
	for pw, want := range map[string]bool{
		"1234567": false, "12345678": true, "ééééééé": false, "éééééééé": true,
		strings.Repeat("x", MaxLen): true, strings.Repeat("x", MaxLen+1): false,
	} {
		if got := CheckLen(pw); got != want {
			t.Errorf("CheckLen(%q) = %v, want %v", pw, got, want)
		}
	}
}

// BenchmarkHashDefault measures one hash at the default parameters: the CPU a sign-in,
// a sign-up with a password or a password change costs, and so how many of them the
// hashing bound lets run each second.
func BenchmarkHashDefault(b *testing.B) {
	h, err := New(Default, 1)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := h.Hash(context.Background(), "correct horse battery"); err != nil {
			b.Fatal(err)
		}
	}
}
