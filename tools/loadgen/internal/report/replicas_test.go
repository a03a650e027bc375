package report

import (
	"path/filepath"
	"testing"
)

func TestReplicasMarkdown(t *testing.T) {
	t.Parallel()
	r := sample()
	r.Replicas = &Replicas{Partitions: 16, Replicas: 3,
		Share: &ReplicaShare{Seconds: 60, Users: 128, Rate: 200, Achieved: 198, Applied: []ReplicaApplied{
			{Name: "projector", PID: 10, Held: 6, Applied: 4500, Share: 0.375, CPUSeconds: 3},
			{Name: "projector-2", PID: 11, Held: 5, Applied: 4300, Share: 0.358, CPUSeconds: 2.5},
			{Name: "projector-3", PID: 12, Held: 5, Applied: 3200, Share: 0.267, CPUSeconds: 2},
		}, Lowest: 0.267},
		Kill: &ReplicaKill{Victim: "projector-3", VictimHeld: 5, Rate: 200, Moved: []int{2, 7}, ResumedSec: []float64{3.1, 3.4},
			GapSec: 3.4, Resumed: true, HeldSec: 3.05, Held: true, PollMS: 100},
		Rates: []*ReplicaRate{
			{Replicas: 3, Backlog: "shape", Events: 10100, Seconds: 2, EventsPerSec: 5050, CPU: []ProcCPU{{Name: "projector", CPUSeconds: 0.5}}},
			{Replicas: 1, Events: 10100, Seconds: 2.5, EventsPerSec: 4040},
		}}
	markdown(t, r,
		"| 3 projector replicas under 198 writes/s for 60 s: lowest share of the applied events | 26.7% (projector 38%, projector-2 36%, projector-3 27%; load 0.0) | | ≥ 20% each | met |",
		"| kill -9 one of 3 replicas under 200 writes/s: until its partitions are applied again | 3.40 s (partitions held again after 3.05 s; load 0.0) | | ≤ 5 s | met |",
		"| aggregate apply rate, 3 replicas / 1 replica, on the same backlog | 5050 / 4040 per s | 1.25 | ≥ 1.0 | met |",
		// Against the sample's insertMany one batch at a time (5000/s).
		"| 1 replica on the Watermill router / raw insertMany ceiling (package ceilings, one batch at a time) | 4040 / 5000 per s | 0.81 | reported | |",
		"## Projector replicas (16 partitions)",
		"| projector-3 | 12 | 5 | 3200 | 26.7% | 2.0 |",
		"applied again after: p2 3.10 s, p7 3.40 s (resumed: true",
		"| 3 | shape | 10100 | 0 | 0 | 2.0 | 5050 | projector 0.5 | 0.0 |",
	)

	// A kill whose partitions never resumed shows the lower bound and misses.
	r.Replicas.Kill.Resumed, r.Replicas.Kill.GapSec = false, 30
	r.Replicas.Rates = r.Replicas.Rates[:1]
	markdown(t, r,
		"| > 30.00 (not every moved partition resumed) s (partitions held again after 3.05 s; load 0.0) | | ≤ 5 s | not measured |",
		"| aggregate apply rate, 3 replicas / 1 replica, on the same backlog | 5050 / n/a per s | n/a | ≥ 1.0 | not measured |",
	)
	if err := r.WriteJSON(filepath.Join(t.TempDir(), "r.json")); err != nil {
		t.Fatal(err)
	}
}
