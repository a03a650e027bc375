package partition

import (
	"hash/fnv"
	"slices"
)

// Assign gives each unit to one of members: every member gets len(units)/len(members)
// units, the first len(units)%len(members) of them (in sorted order) one more, and each
// unit goes to the member of highest rendezvous score that still has room. Every
// replica computes the same assignment from the same member set, the shares differ by
// one at most, and a member joining or leaving moves few units: a unit stays with its
// preferred member while that member has room.
func Assign(units, members []string) map[string]string {
	if len(members) == 0 {
		return nil
	}
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	room := make(map[string]int, len(ms))
	for i, m := range ms {
		room[m] = len(units) / len(ms)
		if i < len(units)%len(ms) {
			room[m]++
		}
	}
	out := make(map[string]string, len(units))
	ranked := make([]string, len(ms))
	for _, u := range units {
		copy(ranked, ms)
		slices.SortFunc(ranked, func(a, b string) int {
			sa, sb := score(u, a), score(u, b)
			switch {
			case sa > sb:
				return -1
			case sa < sb:
				return 1
			}
			return 0
		})
		for _, m := range ranked {
			if room[m] > 0 {
				room[m]--
				out[u] = m
				break
			}
		}
	}
	return out
}

func score(unit, member string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(unit))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(member))
	return h.Sum64()
}
