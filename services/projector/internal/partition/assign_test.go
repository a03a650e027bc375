package partition_test

import (
	"fmt"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/partition"
)

func units(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("p%d", i)
	}
	return out
}

func shares(a map[string]string) map[string]int {
	out := map[string]int{}
	for _, m := range a {
		out[m]++
	}
	return out
}

func TestAssignIsBalancedAndStable(t *testing.T) {
	t.Parallel()
	us := units(16)
	for _, members := range [][]string{{"a"}, {"a", "b"}, {"a", "b", "c"}, {"a", "b", "c", "d", "e"}, {"x", "y", "z", "w", "v", "u", "t"}} {
		a := partition.Assign(us, members)
		if len(a) != len(us) {
			t.Fatalf("%v: %d units assigned, want %d", members, len(a), len(us))
		}
		lo, hi := len(us)/len(members), (len(us)+len(members)-1)/len(members)
		for _, m := range members {
			if n := shares(a)[m]; n < lo || n > hi {
				t.Errorf("%v: %s holds %d units, want %d..%d", members, m, n, lo, hi)
			}
		}
		// The same set in another order and with duplicates gives the same assignment.
		rev := append([]string{members[len(members)-1]}, members...)
		b := partition.Assign(us, rev)
		for u := range a {
			if a[u] != b[u] {
				t.Fatalf("%v: assignment depends on the order of members", members)
			}
		}
	}
	// A fourth member takes units from the others without shuffling the rest.
	before, after := partition.Assign(us, []string{"a", "b", "c"}), partition.Assign(us, []string{"a", "b", "c", "d"})
	moved := 0
	for u := range before {
		if before[u] != after[u] {
			moved++
		}
	}
	if moved > len(us)/2 {
		t.Errorf("a joining member moved %d of %d units", moved, len(us))
	}
	if partition.Assign(us, nil) != nil {
		t.Error("units assigned without members")
	}
}
