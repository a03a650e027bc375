package steps

import (
	"math"
	"testing"
)

func line(slope, noise float64) []Reading {
	var rs []Reading
	for i := range 15 {
		jitter := noise
		if i%2 == 0 {
			jitter = -noise
		}
		rs = append(rs, Reading{T: float64(i), Backlog: 40 + slope*float64(i) + jitter})
	}
	return rs
}

func TestSlopeAndGrows(t *testing.T) {
	t.Parallel()
	if got := Slope(line(12, 0)); math.Abs(got-12) > 1e-9 {
		t.Fatalf("Slope = %v, want 12", got)
	}
	if got := Slope([]Reading{{T: 1, Backlog: 5}}); got != 0 {
		t.Fatalf("Slope of one reading = %v", got)
	}
	tests := []struct {
		name string
		rs   []Reading
		rate float64
		want bool
	}{
		{"flat backlog holds", line(0, 0), 200, false},
		{"jitter around a level holds", line(0, 30), 200, false},
		{"slow growth under the tolerance holds", line(5, 0), 200, false},
		{"growth above the tolerance fails", line(50, 0), 200, true},
		{"at a low rate one event per second is the floor", line(2, 0), 10, true},
		{"draining backlog holds", line(-20, 0), 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Grows(tt.rs, tt.rate, 0.05); got != tt.want {
				t.Fatalf("Grows = %v, want %v (slope %v)", got, tt.want, Slope(tt.rs))
			}
		})
	}
}

// run drives a search against a pipeline whose true capacity is capacity.
func run(t *testing.T, s *Search, capacity float64) (rates []float64) {
	t.Helper()
	for range 100 {
		r := s.Rate()
		rates = append(rates, r)
		if s.Record(r <= capacity) {
			return rates
		}
	}
	t.Fatal("search did not finish")
	return nil
}

func TestSearch(t *testing.T) {
	t.Parallel()
	s, err := NewSearch(50, 2, 0.1, 20)
	if err != nil {
		t.Fatal(err)
	}
	rates := run(t, s, 230)
	held, failed := s.Result()
	if held > 230 || failed <= 230 || (failed-held)/held > 0.1 {
		t.Fatalf("bracket [%v, %v] after %v, want a 10%% bracket around 230", held, failed, rates)
	}
	if rates[0] != 50 || rates[1] != 100 || rates[2] != 200 || rates[3] != 400 {
		t.Fatalf("rates %v: want geometric steps 50, 100, 200, 400 first", rates)
	}
}

func TestSearchStepsDownAndStops(t *testing.T) {
	t.Parallel()
	s, err := NewSearch(100, 2, 0.1, 20)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s, 30)
	if held, failed := s.Result(); held > 30 || failed <= 30 || held == 0 {
		t.Fatalf("bracket [%v, %v], want one around 30", held, failed)
	}

	capped, err := NewSearch(10, 2, 0.1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if rates := run(t, capped, 1e9); len(rates) != 3 {
		t.Fatalf("ran %d steps, want the cap of 3", len(rates))
	}
	if held, failed := capped.Result(); held != 40 || failed != 0 {
		t.Fatalf("uncapped pipeline: bracket [%v, %v], want [40, 0]", held, failed)
	}
}

func TestNewSearchValidates(t *testing.T) {
	t.Parallel()
	for _, c := range [][4]float64{{0, 2, 0.1, 5}, {10, 1, 0.1, 5}, {10, 2, 0, 5}, {10, 2, 0.1, 0}} {
		if _, err := NewSearch(c[0], c[1], c[2], int(c[3])); err == nil {
			t.Errorf("NewSearch%v: want an error", c)
		}
	}
}
