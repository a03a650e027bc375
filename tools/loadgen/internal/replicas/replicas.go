// Package replicas holds the pure parts of the bench's projector-replicas phase: what a
// projector replica's /metrics says about its share of the work, each replica's share
// of the events applied over a window, and, after one replica is killed, how long its
// partitions went without being applied.
package replicas

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The metrics a projector replica exports on its admin listener that the phase reads.
const (
	MetricHeld   = "projector_partitions_held"
	MetricEvents = "projector_events_total"
	// OutcomeApplied is the outcome label of MetricEvents counting applied events.
	OutcomeApplied = "applied"
)

// Scrape is what one replica's /metrics said.
type Scrape struct {
	Held    float64 // partitions it consumes
	Applied float64 // events it applied since it started
}

// Parse reads a Prometheus text exposition. Both metrics must be there: a replica
// without them is not one this phase can measure.
func Parse(r io.Reader) (Scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Scrape{}, fmt.Errorf("parse metrics: %w", err)
	}
	var s Scrape
	held, ok := fams[MetricHeld]
	if !ok || len(held.GetMetric()) != 1 || held.GetMetric()[0].GetGauge() == nil {
		return s, fmt.Errorf("metrics: no gauge %s", MetricHeld)
	}
	s.Held = held.GetMetric()[0].GetGauge().GetValue()
	found := false
	for _, m := range fams[MetricEvents].GetMetric() {
		if label(m, "outcome") == OutcomeApplied && m.GetCounter() != nil {
			s.Applied, found = m.GetCounter().GetValue(), true
		}
	}
	if !found {
		return s, fmt.Errorf("metrics: no counter %s{outcome=%q}", MetricEvents, OutcomeApplied)
	}
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Shares are each replica's part of the total of deltas (events applied over a
// window), and the smallest of them; NaN when nothing was applied.
func Shares(deltas []float64) (shares []float64, lowest float64) {
	var total float64
	for _, d := range deltas {
		total += d
	}
	lowest = math.NaN()
	shares = make([]float64, len(deltas))
	for i, d := range deltas {
		shares[i] = math.NaN()
		if total > 0 {
			shares[i] = d / total
		}
	}
	if total > 0 && len(shares) > 0 {
		lowest = slices.Min(shares)
	}
	return shares, lowest
}

// Poll is one look at the group during the kill: the survivors' partitions held
// summed, and per partition its holder (the member named by its claim, "" when
// unclaimed) and how many of its messages were acknowledged so far.
type Poll struct {
	At      time.Duration // since the kill
	Held    float64
	Holders []string
	Acked   []uint64
}

// Gap is how long the killed replica's partitions went without being applied.
type Gap struct {
	// Moved are the partitions whose holder at the end differs from the holder at the
	// kill: the killed replica's, and any the survivors passed between them.
	Moved []int
	// HeldAfter is when the survivors' partitions held first summed to the partition
	// count; ok false when they never did.
	HeldAfter time.Duration
	HeldOK    bool
	// Resumed is, per moved partition (in Moved's order), when a new holder first had
	// one of its messages acknowledged; Worst is the largest, the gap. ResumedOK is
	// false when a moved partition never resumed within the polls (Worst is then the
	// last poll's time, a lower bound).
	Resumed   []time.Duration
	Worst     time.Duration
	ResumedOK bool
}

// Analyse reads the polls after a kill against the poll taken just before it, for a
// group of partitions partitions. A partition's consumption is back when a holder
// other than the one at the kill has acknowledged a message of it, which needs
// messages to arrive: under a steady load over many owners each partition has some.
func Analyse(before Poll, polls []Poll, partitions int) Gap {
	var g Gap
	for _, p := range polls {
		if p.Held == float64(partitions) {
			g.HeldAfter, g.HeldOK = p.At, true
			break
		}
	}
	if len(polls) == 0 {
		return g
	}
	last := polls[len(polls)-1]
	for i := range partitions {
		if i < len(before.Holders) && i < len(last.Holders) && last.Holders[i] != before.Holders[i] {
			g.Moved = append(g.Moved, i)
		}
	}
	g.ResumedOK = true
	for _, i := range g.Moved {
		at, ok := time.Duration(0), false
		for _, p := range polls {
			if i < len(p.Holders) && i < len(p.Acked) && p.Holders[i] != "" && p.Holders[i] != before.Holders[i] && p.Acked[i] > before.Acked[i] {
				at, ok = p.At, true
				break
			}
		}
		if !ok {
			at, g.ResumedOK = last.At, false
		}
		g.Resumed = append(g.Resumed, at)
		g.Worst = max(g.Worst, at)
	}
	return g
}

// Done reports whether the polls so far show the group recovered: every partition
// held by the survivors, and every partition that changed holder resumed.
func Done(before Poll, polls []Poll, partitions int) bool {
	g := Analyse(before, polls, partitions)
	return g.HeldOK && len(g.Moved) > 0 && g.ResumedOK
}

// Balanced reports whether replicas holding held partitions have the shares the
// projector's assignment gives them: all partitions held, each replica
// partitions/len(held) of them or one more. A sum that is right alone can be a
// hand-over half done.
func Balanced(held []float64, partitions int) bool {
	if len(held) == 0 {
		return false
	}
	lo := float64(partitions / len(held))
	var sum float64
	for _, h := range held {
		if h != lo && h != lo+1 {
			return false
		}
		sum += h
	}
	return sum == float64(partitions)
}
