// Package steps finds the pipeline's maximum sustained write rate: it steps an open-loop
// write rate up geometrically until the backlog (outbox rows not yet published plus
// stream messages not yet delivered to the projector) grows during a step, then bisects
// between the last rate that held and the first that did not.
package steps

import "fmt"

// Reading is the backlog at a moment of a step: seconds since the step began and the
// outbox backlog plus the consumer's pending count.
type Reading struct {
	T       float64 `json:"t"`
	Backlog float64 `json:"backlog"`
}

// Slope is the least-squares slope of the backlog over time, in events per second;
// 0 with fewer than two readings.
func Slope(rs []Reading) float64 {
	if len(rs) < 2 {
		return 0
	}
	var st, sb float64
	for _, r := range rs {
		st += r.T
		sb += r.Backlog
	}
	n := float64(len(rs))
	mt, mb := st/n, sb/n
	var num, den float64
	for _, r := range rs {
		num += (r.T - mt) * (r.Backlog - mb)
		den += (r.T - mt) * (r.T - mt)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

// Grows reports whether a step at rate (events per second) left a growing backlog:
// a slope above tolerance (a fraction of the rate, and at least one event per second),
// so that the jitter of a backlog that merely hovers does not count.
func Grows(rs []Reading, rate, tolerance float64) bool {
	return Slope(rs) > max(1, tolerance*rate)
}

// Search is the state of a step search. The zero value is not usable: use NewSearch.
type Search struct {
	rate, factor, precision float64
	maxSteps, steps         int
	lo, hi                  float64 // highest rate that held; lowest that did not (0: none yet)
}

// NewSearch starts at start events per second, multiplies by factor while steps hold,
// then bisects until the bracket is narrower than precision (a fraction of the lower
// end) or maxSteps steps were run.
func NewSearch(start, factor, precision float64, maxSteps int) (*Search, error) {
	if start <= 0 || factor <= 1 || precision <= 0 || maxSteps < 1 {
		return nil, fmt.Errorf("step search: start %v > 0, factor %v > 1, precision %v > 0, steps %d >= 1 required", start, factor, precision, maxSteps)
	}
	return &Search{rate: start, factor: factor, precision: precision, maxSteps: maxSteps}, nil
}

// Rate is the rate of the next step.
func (s *Search) Rate() float64 { return s.rate }

// Record takes the outcome of the step at Rate and reports whether the search is done.
func (s *Search) Record(held bool) (done bool) {
	s.steps++
	if held {
		s.lo = max(s.lo, s.rate)
	} else if s.hi == 0 || s.rate < s.hi {
		s.hi = s.rate
	}
	switch {
	case s.steps >= s.maxSteps:
		return true
	case s.hi == 0:
		s.rate *= s.factor
	case s.lo == 0:
		// Even the first rate was too much: step down.
		s.rate /= s.factor
	case (s.hi-s.lo)/s.lo <= s.precision:
		return true
	default:
		s.rate = (s.lo + s.hi) / 2
	}
	return false
}

// Result is the highest rate that held (0 if none did) and the lowest that did not
// (0 if none failed: the ceiling is above every rate tried).
func (s *Search) Result() (held, failed float64) { return s.lo, s.hi }
