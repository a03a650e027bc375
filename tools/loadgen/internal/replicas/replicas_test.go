package replicas

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// A projector replica's exposition, as client_golang writes it.
const exposition = `# HELP projector_events_total Events handled, by outcome.
# TYPE projector_events_total counter
projector_events_total{outcome="applied"} 1234
projector_events_total{outcome="dead_lettered"} 0
projector_events_total{outcome="failed"} 2
projector_events_total{outcome="stale"} 17
# HELP projector_partitions_held Stream partitions this replica consumes; 0 while it is a standby.
# TYPE projector_partitions_held gauge
projector_partitions_held 6
# HELP projector_lag_seconds Lag.
# TYPE projector_lag_seconds histogram
projector_lag_seconds_bucket{le="0.005"} 1
projector_lag_seconds_bucket{le="+Inf"} 3
projector_lag_seconds_sum 0.2
projector_lag_seconds_count 3
`

func TestParse(t *testing.T) {
	t.Parallel()
	s, err := Parse(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if s.Held != 6 || s.Applied != 1234 {
		t.Fatalf("Parse = %+v, want 6 held and 1234 applied (not the stale or failed counts)", s)
	}
	for name, text := range map[string]string{
		"no held gauge":     strings.Split(exposition, "# HELP projector_partitions_held")[0],
		"no applied count":  strings.Replace(exposition, `outcome="applied"`, `outcome="other"`, 1),
		"not an exposition": "projector_partitions_held{ 6\n",
	} {
		if _, err := Parse(strings.NewReader(text)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestShares(t *testing.T) {
	t.Parallel()
	shares, lowest := Shares([]float64{500, 300, 200})
	if !slices.Equal(shares, []float64{0.5, 0.3, 0.2}) || lowest != 0.2 {
		t.Fatalf("Shares = %v, lowest %v", shares, lowest)
	}
	// A standby that applied nothing is a share of 0, the lowest.
	if _, lowest := Shares([]float64{10, 0, 30}); lowest != 0 {
		t.Errorf("lowest with an idle replica = %v, want 0", lowest)
	}
	if shares, lowest := Shares([]float64{0, 0}); !math.IsNaN(lowest) || !math.IsNaN(shares[0]) {
		t.Errorf("nothing applied: %v, %v; want NaN", shares, lowest)
	}
}

// poll builds a look at 4 partitions: holders and acknowledged counts.
func poll(at time.Duration, held float64, holders string, acked ...uint64) Poll {
	h := strings.Split(holders, ",")
	for i := range h {
		if h[i] == "-" {
			h[i] = ""
		}
	}
	return Poll{At: at, Held: held, Holders: h, Acked: acked}
}

func TestAnalyse(t *testing.T) {
	t.Parallel()
	const s = time.Second
	// c was killed holding p2 and p3; a and b keep p0 and p1 moving throughout.
	before := poll(0, 2, "a,b,c,c", 10, 10, 10, 10)
	polls := []Poll{
		poll(1*s, 2, "a,b,c,c", 12, 12, 10, 10), // c's claims live on
		poll(3*s, 2, "a,b,-,-", 14, 14, 10, 10), // aged out
		poll(4*s, 4, "a,b,a,b", 16, 16, 10, 10), // claimed: held sums to 4, nothing applied yet
		poll(5*s, 4, "a,b,a,b", 18, 18, 13, 10), // p2 applied again
		poll(6*s, 4, "a,b,a,b", 20, 20, 15, 11), // p3 too
	}
	for n := 1; n <= len(polls); n++ {
		if got, want := Done(before, polls[:n], 4), n == len(polls); got != want {
			t.Errorf("Done after %d polls = %v, want %v", n, got, want)
		}
	}
	g := Analyse(before, polls, 4)
	if !slices.Equal(g.Moved, []int{2, 3}) || !g.HeldOK || g.HeldAfter != 4*s ||
		!slices.Equal(g.Resumed, []time.Duration{5 * s, 6 * s}) || g.Worst != 6*s || !g.ResumedOK {
		t.Fatalf("Analyse = %+v", g)
	}

	// Never resumed within the polls: the last poll's time is a lower bound.
	g = Analyse(before, polls[:4], 4)
	if g.ResumedOK || g.Worst != 5*s || !slices.Equal(g.Resumed, []time.Duration{5 * s, 5 * s}) {
		t.Errorf("p3 never resumed: %+v", g)
	}
	// Acknowledgements by the killed holder before its claim aged out do not count.
	g = Analyse(before, []Poll{poll(1*s, 2, "a,b,c,-", 10, 10, 11, 10), poll(2*s, 2, "a,b,-,-", 10, 10, 11, 10)}, 4)
	if g.ResumedOK || g.HeldOK || !slices.Equal(g.Moved, []int{2, 3}) {
		t.Errorf("nothing taken over: %+v", g)
	}
	if g := Analyse(before, nil, 4); g.ResumedOK || g.HeldOK || len(g.Moved) > 0 {
		t.Errorf("no polls: %+v", g)
	}
}

func TestBalanced(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		held []float64
		want bool
	}{
		{[]float64{6, 5, 5}, true},
		{[]float64{16}, true},
		{[]float64{7, 5, 4}, false}, // the right sum, a hand-over half done
		{[]float64{6, 5, 4}, false}, // a partition in between holders
		{[]float64{1, 1, 0}, true},  // 2 partitions for 3: one standby
		{nil, false},
	} {
		p := 16
		if len(c.held) == 3 && c.held[0] == 1 {
			p = 2
		}
		if got := Balanced(c.held, p); got != c.want {
			t.Errorf("Balanced(%v, %d) = %v, want %v", c.held, p, got, c.want)
		}
	}
}
