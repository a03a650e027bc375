package report

import (
	"fmt"
	"math"
	"strings"
)

// Replicas is the projector-replicas phase (issue 11): devstack's projector and more
// replicas started beside it share the stream's partitions.
type Replicas struct {
	Partitions int `json:"partitions"`
	// Replicas is how many replicas shared the work (devstack's included).
	Replicas int           `json:"replicas"`
	Share    *ReplicaShare `json:"share,omitempty"`
	Kill     *ReplicaKill  `json:"kill,omitempty"`
	// Rates are the drains of the same backlog shape by 1 and by Replicas replicas.
	Rates []*ReplicaRate `json:"rates,omitempty"`
}

// ReplicaShare is each replica's share of the events applied under a steady load.
type ReplicaShare struct {
	Seconds  float64 `json:"seconds"`
	Users    int     `json:"users"`
	Rate     float64 `json:"offered_writes_per_sec"`
	Achieved float64 `json:"achieved_writes_per_sec"`
	Missed   int     `json:"missed_sends"`
	// Applied is every replica's applied events over the load and the drain after it.
	Applied []ReplicaApplied `json:"replicas"`
	Lowest  float64          `json:"lowest_share"`
	Load1   float64          `json:"load1"`
}

// ReplicaApplied is one replica's part of a window.
type ReplicaApplied struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`
	Held       float64 `json:"partitions_held"`
	Applied    float64 `json:"applied_events"`
	Share      float64 `json:"share"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// ReplicaKill is one replica killed with SIGKILL under a steady load, and how long
// its partitions went unapplied.
type ReplicaKill struct {
	Victim     string  `json:"victim"`
	VictimHeld float64 `json:"victim_partitions_held"`
	Rate       float64 `json:"offered_writes_per_sec"`
	// Moved are the partitions whose holder changed; ResumedSec, per moved partition,
	// when a new holder first had one of its messages acknowledged.
	Moved      []int     `json:"moved_partitions"`
	ResumedSec []float64 `json:"resumed_after_sec"`
	// GapSec is the largest of ResumedSec; a lower bound when Resumed is false.
	GapSec  float64 `json:"gap_sec"`
	Resumed bool    `json:"resumed"`
	// HeldSec is when the survivors' partitions held first summed to the partition count.
	HeldSec float64 `json:"held_after_sec"`
	Held    bool    `json:"held"`
	PollMS  float64 `json:"poll_ms"`
	// PollMaxMS is the longest a poll took: the times above are each poll's end, so
	// they overstate the gap by up to that much.
	PollMaxMS float64 `json:"poll_max_ms"`
	Load1     float64 `json:"load1"`
}

// ReplicaRate is the drain of a backlog by some replicas.
type ReplicaRate struct {
	Replicas     int     `json:"replicas"`
	Backlog      string  `json:"backlog"`
	Events       int     `json:"events"`
	DocsBefore   int64   `json:"todo_documents_before"`
	Pending      uint64  `json:"pending_at_resume"`
	Seconds      float64 `json:"apply_seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	// CPUSeconds of each process over the drain: the replicas, and devstack's process,
	// which holds NATS and FerretDB.
	CPU   []ProcCPU `json:"cpu"`
	Load1 float64   `json:"load1"`
}

// ProcCPU is one process's CPU time over a window.
type ProcCPU struct {
	Name       string  `json:"name"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// rate is the drain by n replicas, nil when not measured.
func (r *Replicas) rate(n int) *ReplicaRate {
	if r == nil {
		return nil
	}
	for _, x := range r.Rates {
		if x.Replicas == n {
			return x
		}
	}
	return nil
}

func perSec(x *ReplicaRate) float64 {
	if x == nil {
		return math.NaN()
	}
	return x.EventsPerSec
}

// replicaTargets writes the target rows of issue 11.
func (r *Results) replicaTargets(p func(string, ...any)) {
	rp := r.Replicas
	if rp == nil {
		return
	}
	if s := rp.Share; s != nil {
		var parts []string
		for _, a := range s.Applied {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", a.Name, 100*a.Share))
		}
		p("| %d projector replicas under %.0f writes/s for %.0f s: lowest share of the applied events | %s (%s; load %.1f) | | ≥ 20%% each | %s |\n",
			len(s.Applied), s.Achieved, s.Seconds, pct(s.Lowest), strings.Join(parts, ", "), s.Load1, Verdict(s.Lowest, 0.2, false))
	}
	if k := rp.Kill; k != nil {
		gap := f(k.GapSec)
		if !k.Resumed {
			gap = fmt.Sprintf("> %.2f (not every moved partition resumed)", k.GapSec)
		}
		x := math.NaN()
		if k.Resumed {
			x = k.GapSec
		}
		p("| kill -9 one of %d replicas under %.0f writes/s: until its partitions are applied again | %s s (partitions held again after %s s; load %.1f) | | ≤ 5 s | %s |\n",
			rp.Replicas, k.Rate, gap, heldAfter(k), k.Load1, Verdict(x, 5, true))
	}
	one, many := rp.rate(1), rp.rate(rp.Replicas)
	if one != nil || many != nil {
		x := Ratio(perSec(many), perSec(one))
		p("| aggregate apply rate, %d replicas / 1 replica, on the same backlog | %s / %s per s | %s | ≥ 1.0 | %s |\n",
			rp.Replicas, f0(perSec(many)), f0(perSec(one)), f(x), Verdict(x, 1, false))
	}
	if one != nil {
		// Like with like: the backlog is creates, which the projector writes as one
		// insertMany per fetched batch; the raw ceiling times that insertMany alone.
		ceil := r.Ceilings.Best(OpInsertMany, 1)
		p("| 1 replica on the Watermill router / raw insertMany ceiling (package ceilings, one batch at a time) | %s / %s per s | %s | reported | |\n",
			f0(one.EventsPerSec), f0(ceil), f(Ratio(one.EventsPerSec, ceil)))
	}
}

// replicaTables writes the phase's figures in full.
func (r *Results) replicaTables(p func(string, ...any)) {
	rp := r.Replicas
	if rp == nil {
		return
	}
	p("\n## Projector replicas (%d partitions)\n", rp.Partitions)
	if s := rp.Share; s != nil {
		p("\nShare of the applied events: %d users writing %.0f/s offered (%.0f/s achieved, %d sends missed) for %.0f s, counted until the stream drained (load %.1f).\n\n| replica | pid | partitions held | applied events | share | CPU s |\n|---|---|---|---|---|---|\n",
			s.Users, s.Rate, s.Achieved, s.Missed, s.Seconds, s.Load1)
		for _, a := range s.Applied {
			p("| %s | %d | %.0f | %.0f | %s | %.1f |\n", a.Name, a.PID, a.Held, a.Applied, pct(a.Share), a.CPUSeconds)
		}
	}
	if k := rp.Kill; k != nil {
		var each []string
		for i, m := range k.Moved {
			if i < len(k.ResumedSec) {
				each = append(each, fmt.Sprintf("p%d %.2f s", m, k.ResumedSec[i]))
			}
		}
		p("\nKill -9 of %s (holding %.0f partitions) under %.0f writes/s, polled every %.0f ms (a poll took up to %.0f ms; times are at each poll's end): the survivors held every partition after %s s; the partitions that changed holder were applied again after: %s (resumed: %v; load %.1f).\n",
			k.Victim, k.VictimHeld, k.Rate, k.PollMS, k.PollMaxMS, heldAfter(k), strings.Join(each, ", "), k.Resumed, k.Load1)
	}
	if len(rp.Rates) > 0 {
		p("\nApply rate on a backlog (consumers paused while it was written and published, then resumed and timed until nothing was pending or unacknowledged):\n\n| replicas | backlog | events | pending at resume | todo documents before | apply s | events/s | CPU s over the drain | load |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range rp.Rates {
			var cpu []string
			for _, c := range x.CPU {
				cpu = append(cpu, fmt.Sprintf("%s %.1f", c.Name, c.CPUSeconds))
			}
			p("| %d | %s | %d | %d | %d | %.1f | %.0f | %s | %.1f |\n", x.Replicas, x.Backlog, x.Events, x.Pending, x.DocsBefore, x.Seconds, x.EventsPerSec, strings.Join(cpu, ", "), x.Load1)
		}
	}
}

func heldAfter(k *ReplicaKill) string {
	if !k.Held {
		return "never (within the bound)"
	}
	return fmt.Sprintf("%.2f", k.HeldSec)
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*v)
}

func f0(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", v)
}
