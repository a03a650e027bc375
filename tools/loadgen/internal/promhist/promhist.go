// Package promhist reads one histogram out of a Prometheus text exposition and
// estimates its quantiles the way PromQL's histogram_quantile does (linear
// interpolation inside the bucket), so the figures match what an operator's dashboard
// shows. Two scrapes subtracted give the distribution of just the window between them.
package promhist

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Bucket is a cumulative count of observations at or below UpperBound.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// Histogram is a cumulative histogram, buckets ascending, the last one +Inf.
type Histogram struct {
	Buckets []Bucket
	Sum     float64
	Count   float64
}

// Parse reads the unlabelled histogram name (apart from le) from a text exposition.
func Parse(r io.Reader, name string) (Histogram, error) {
	var h Histogram
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		// A timestamp may follow the value.
		value, _, _ = strings.Cut(strings.TrimSpace(value), " ")
		switch {
		case strings.HasPrefix(metric, name+"_bucket{"):
			le, err := label(metric, "le")
			if err != nil {
				return h, err
			}
			ub, err := strconv.ParseFloat(le, 64)
			if err != nil {
				return h, fmt.Errorf("bucket bound %q: %w", le, err)
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return h, fmt.Errorf("bucket count %q: %w", value, err)
			}
			h.Buckets = append(h.Buckets, Bucket{UpperBound: ub, Count: v})
			found = true
		case metric == name+"_sum":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return h, fmt.Errorf("sum %q: %w", value, err)
			}
			h.Sum = v
		case metric == name+"_count":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return h, fmt.Errorf("count %q: %w", value, err)
			}
			h.Count = v
		}
	}
	if err := sc.Err(); err != nil {
		return h, fmt.Errorf("read exposition: %w", err)
	}
	if !found {
		return h, fmt.Errorf("histogram %s not found", name)
	}
	slices.SortFunc(h.Buckets, func(a, b Bucket) int { return cmpFloat(a.UpperBound, b.UpperBound) })
	return h, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func label(metric, key string) (string, error) {
	i := strings.Index(metric, key+`="`)
	if i < 0 {
		return "", fmt.Errorf("%s: no %s label", metric, key)
	}
	rest := metric[i+len(key)+2:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return "", fmt.Errorf("%s: unterminated %s label", metric, key)
	}
	return rest[:j], nil
}

// Sub is the histogram of the observations made between earlier and h (same buckets).
func (h Histogram) Sub(earlier Histogram) (Histogram, error) {
	if len(h.Buckets) != len(earlier.Buckets) {
		return Histogram{}, fmt.Errorf("bucket layouts differ: %d and %d buckets", len(h.Buckets), len(earlier.Buckets))
	}
	out := Histogram{Sum: h.Sum - earlier.Sum, Count: h.Count - earlier.Count, Buckets: make([]Bucket, len(h.Buckets))}
	for i, b := range h.Buckets {
		if b.UpperBound != earlier.Buckets[i].UpperBound {
			return Histogram{}, fmt.Errorf("bucket %d bounds differ: %v and %v", i, b.UpperBound, earlier.Buckets[i].UpperBound)
		}
		out.Buckets[i] = Bucket{UpperBound: b.UpperBound, Count: b.Count - earlier.Buckets[i].Count}
	}
	return out, nil
}

// Quantile estimates quantile q (0..1) as histogram_quantile does: linear inside the
// bucket that holds the rank, the lower bound of the first bucket taken as 0; a rank in
// the +Inf bucket answers the highest finite bound. NaN without observations.
func (h Histogram) Quantile(q float64) float64 {
	if len(h.Buckets) == 0 {
		return math.NaN()
	}
	total := h.Buckets[len(h.Buckets)-1].Count
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	lower, prev := 0.0, 0.0
	for i, b := range h.Buckets {
		if b.Count >= rank {
			if math.IsInf(b.UpperBound, 1) {
				if i == 0 {
					return math.NaN()
				}
				return h.Buckets[i-1].UpperBound
			}
			if b.Count == prev {
				return b.UpperBound
			}
			return lower + (b.UpperBound-lower)*(rank-prev)/(b.Count-prev)
		}
		lower, prev = b.UpperBound, b.Count
	}
	return h.Buckets[len(h.Buckets)-1].UpperBound
}
