package bench

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/driver"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/stats"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/steps"
)

// stepSearch finds the maximum sustained pipeline rate on the read model as it is now
// (label names its size), then holds half of it with the black-box probe on and 80%
// of it to confirm the backlog does not grow.
func (r *runner) stepSearch(ctx context.Context, label string) error {
	if err := r.drain(ctx); err != nil {
		return fmt.Errorf("before the search: %w", err)
	}
	res := &report.Search{Label: label}
	r.res.Searches = append(r.res.Searches, res)
	var err error
	if res.DocsStart, err = r.todoCount(ctx); err != nil {
		return err
	}
	search, err := steps.NewSearch(r.cfg.StepStart, r.cfg.StepFactor, r.cfg.StepPrecision, r.cfg.StepMax)
	if err != nil {
		return err
	}
	for {
		rate := search.Rate()
		name := fmt.Sprintf("%s: step %.0f/s", label, rate)
		r.setPhase(name)
		rec := stats.NewRecorder()
		drv := driver.New(r.st.apiURL, rec, nil, driver.Mix{CompletePct: r.cfg.CompletePct, DeletePct: r.cfg.DeletePct}, 30*time.Second)
		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, r.cfg.Step)
		drv.OpenLoop(sctx, r.clients, rate)
		cancel()
		drv.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		end := time.Now()
		slope, grew := r.growth(start, end, rate)
		var achieved float64
		for _, s := range rec.Routes(end.Sub(start)) {
			achieved += s.RPS
		}
		// An API that cannot take the offered rate is a bound too.
		if achieved < 0.9*rate {
			grew = true
		}
		r.mu.Lock()
		var rs []steps.Reading
		for _, t := range r.timeline {
			if t.Phase == name {
				rs = append(rs, steps.Reading{T: t.T, Backlog: float64(t.Backlog) + float64(t.Pending)})
			}
		}
		r.mu.Unlock()
		res.Steps = append(res.Steps, report.Step{Rate: rate, Achieved: achieved, Slope: slope, Grew: grew, Load1: load1(), Readings: rs})
		r.log.Info("step", "search", label, "rate", rate, "achieved", math.Round(achieved), "slope", slope, "grew", grew)
		done := search.Record(!grew)
		r.setPhase("drain after " + name)
		if err := r.drain(ctx); err != nil {
			r.note("%s, after the step at %.0f/s: %v", label, rate, err)
		}
		if done {
			break
		}
	}
	res.MaxRate, res.FailRate = search.Result()
	if res.FailRate == 0 {
		r.note("%s: the step search never saw growth: the maximum sustained rate is above %.0f/s", label, res.MaxRate)
	}
	if res.MaxRate == 0 {
		r.note("%s: no step rate held; the half-rate and 80%% phases are skipped", label)
	} else {
		if res.Half, err = r.load(ctx, label+": half max rate", r.clients, res.MaxRate/2, r.cfg.Hold, phaseOpts{probe: true}); err != nil {
			return err
		}
		if res.Eighty, err = r.load(ctx, label+": 80% max rate", r.clients, 0.8*res.MaxRate, r.cfg.Hold, phaseOpts{probe: true}); err != nil {
			return err
		}
	}
	res.DocsEnd, err = r.todoCount(ctx)
	return err
}
