// Package stats summarises latency samples: exact percentiles over every recorded
// sample (a run records tens of thousands, so keeping them all is cheap and avoids a
// histogram's bucket error), throughput, and per-second series for the plot.
package stats

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Summary is the distribution of one set of samples, in milliseconds.
type Summary struct {
	Count  int     `json:"count"`
	Errors int     `json:"errors"`
	RPS    float64 `json:"rps"`
	Mean   float64 `json:"mean_ms"`
	P50    float64 `json:"p50_ms"`
	P95    float64 `json:"p95_ms"`
	P99    float64 `json:"p99_ms"`
	P999   float64 `json:"p999_ms"`
	Max    float64 `json:"max_ms"`
}

// Percentile is the nearest-rank percentile p (0..100) of sorted, which must be
// sorted ascending; 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Summarize describes samples (any order; it is sorted in place) recorded over elapsed.
func Summarize(samples []time.Duration, errors int, elapsed time.Duration) Summary {
	slices.Sort(samples)
	s := Summary{Count: len(samples), Errors: errors}
	if elapsed > 0 {
		s.RPS = float64(len(samples)) / elapsed.Seconds()
	}
	if len(samples) == 0 {
		return s
	}
	var sum time.Duration
	for _, d := range samples {
		sum += d
	}
	s.Mean = ms(sum / time.Duration(len(samples)))
	s.P50 = ms(Percentile(samples, 50))
	s.P95 = ms(Percentile(samples, 95))
	s.P99 = ms(Percentile(samples, 99))
	s.P999 = ms(Percentile(samples, 99.9))
	s.Max = ms(samples[len(samples)-1])
	return s
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// Sample is one timed operation.
type Sample struct {
	At      time.Time // when it finished
	Latency time.Duration
	Err     bool
}

// Recorder collects samples per route from many goroutines.
type Recorder struct {
	mu      sync.Mutex
	samples map[string][]Sample
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{samples: map[string][]Sample{}} }

// Add records one operation of route.
func (r *Recorder) Add(route string, s Sample) {
	r.mu.Lock()
	r.samples[route] = append(r.samples[route], s)
	r.mu.Unlock()
}

// Routes summarises every route over elapsed.
func (r *Recorder) Routes(elapsed time.Duration) map[string]Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]Summary, len(r.samples))
	for route, ss := range r.samples {
		var lat []time.Duration
		errs := 0
		for _, s := range ss {
			if s.Err {
				errs++
				continue
			}
			lat = append(lat, s.Latency)
		}
		out[route] = Summarize(lat, errs, elapsed)
	}
	return out
}

// Samples returns a copy of route's samples.
func (r *Recorder) Samples(route string) []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.samples[route])
}

// Point is one bucket of a time series: seconds since the series' start.
type Point struct {
	T   float64 `json:"t"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	N   int     `json:"n"`
}

// Series buckets successful samples by width from start and gives each bucket's p50
// and p99; empty buckets are left out.
func Series(samples []Sample, start time.Time, width time.Duration) []Point {
	buckets := map[int][]time.Duration{}
	for _, s := range samples {
		if s.Err || s.At.Before(start) {
			continue
		}
		i := int(s.At.Sub(start) / width)
		buckets[i] = append(buckets[i], s.Latency)
	}
	keys := make([]int, 0, len(buckets))
	for k := range buckets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]Point, 0, len(keys))
	for _, k := range keys {
		b := buckets[k]
		slices.Sort(b)
		out = append(out, Point{T: (time.Duration(k) * width).Seconds(), P50: ms(Percentile(b, 50)), P99: ms(Percentile(b, 99)), N: len(b)})
	}
	return out
}
