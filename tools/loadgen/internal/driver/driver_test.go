package driver

import "testing"

func TestMixPick(t *testing.T) {
	t.Parallel()
	m := Mix{CompletePct: 25, DeletePct: 15}
	tests := []struct {
		name              string
		roll              int
		haveOpen, haveAny bool
		want              Op
	}{
		{"complete roll with an open todo", 10, true, true, OpComplete},
		{"complete roll without an open todo creates", 10, false, true, OpCreate},
		{"delete roll with a todo", 30, false, true, OpDelete},
		{"delete roll with nothing creates", 30, false, false, OpCreate},
		{"create roll", 39 + 1, true, true, OpCreate},
		{"last roll", 99, true, true, OpCreate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := m.Pick(tt.roll, tt.haveOpen, tt.haveAny); got != tt.want {
				t.Fatalf("Pick(%d) = %v, want %v", tt.roll, got, tt.want)
			}
		})
	}
}

func TestMixShares(t *testing.T) {
	t.Parallel()
	m := Mix{CompletePct: 25, DeletePct: 15}
	counts := map[Op]int{}
	for roll := range 100 {
		counts[m.Pick(roll, true, true)]++
	}
	if counts[OpComplete] != 25 || counts[OpDelete] != 15 || counts[OpCreate] != 60 {
		t.Fatalf("shares over every roll = %v, want 25/15/60", counts)
	}
}
