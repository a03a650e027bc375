package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/consistency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/services/api/internal/readside"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// ReadModel is what the handlers read from MongoDB. The API never writes there: the
// projector owns the read model.
type ReadModel interface {
	Ranking(ctx context.Context, limit int) (*readside.Ranking, error)
	Stats(ctx context.Context, userID string) (readmodel.Stats, error)
	Watermark(ctx context.Context) (readmodel.Watermark, error)
	Versions(ctx context.Context, userID string) (user, stats int64, err error)
}

// Freshness headers on every read-model response: the stream sequence and the commit
// time of the newest event the projection has applied. A write committed at or before
// the watermark time is visible, give or take the events other projector replicas
// still hold.
const (
	ProjectionSeqHeader       = "X-Projection-Sequence"
	ProjectionWatermarkHeader = "X-Projection-Watermark"
)

const (
	defaultLeaderboard = 10
	maxLeaderboard     = readside.MaxTop
)

// errReadModel marks a failure to read MongoDB: the write path is unaffected, so the
// client is told to retry rather than shown a 500.
var errReadModel = errors.New("read model unavailable")

type leaderboardEntry struct {
	Rank        int64  `json:"rank"`
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name"`
	Completed   int64  `json:"completed"`
	Total       int64  `json:"total"`
}

type leaderboardResponse struct {
	Top []leaderboardEntry `json:"top"`
	Me  *leaderboardEntry  `json:"me"`
}

func (a *api) leaderboard(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	bad := queryParams(q, "limit", consistency.QueryParam)
	n := defaultLeaderboard
	if q.Has("limit") {
		v, err := strconv.Atoi(q.Get("limit"))
		if err != nil || v < 1 || v > maxLeaderboard {
			bad = append(bad, problem.FieldError{Pointer: "query:limit", Detail: fmt.Sprintf("must be an integer from 1 to %d", maxLeaderboard)})
		}
		n = v
	}
	if len(bad) > 0 {
		e := newError(kindInvalidParameter, "the query has invalid parameters; see errors")
		e.fields = bad
		return e
	}
	if a.readModel == nil {
		return errReadModel
	}
	reached, err := a.awaitConsistency(w, r)
	if err != nil {
		return err
	}
	snap, err := a.rankings.get(r.Context(), n, reached)
	if err != nil {
		return err
	}
	if wm := snap.watermark; wm != nil {
		setFreshness(w, *wm)
	}
	lb, err := snap.ranking.Leaderboard(r.Context(), n, userID(r.Context()).String())
	if err != nil {
		return fmt.Errorf("%w: leaderboard: %w", errReadModel, err)
	}
	resp := leaderboardResponse{Top: make([]leaderboardEntry, 0, len(lb.Top))}
	for _, e := range lb.Top {
		resp.Top = append(resp.Top, leaderboardEntry(e))
	}
	if lb.Me != nil {
		me := leaderboardEntry(*lb.Me)
		resp.Me = &me
	}
	return writeJSON(w, http.StatusOK, resp)
}

type statsResponse struct {
	UserID    string     `json:"user_id"`
	Open      int64      `json:"open"`
	Completed int64      `json:"completed"`
	Total     int64      `json:"total"`
	UpdatedAt *time.Time `json:"updated_at"`
}

func (a *api) stats(w http.ResponseWriter, r *http.Request) error {
	if a.readModel == nil {
		return errReadModel
	}
	if bad := queryParams(r.URL.Query(), consistency.QueryParam); len(bad) > 0 {
		e := newError(kindInvalidParameter, "the query has invalid parameters; see errors")
		e.fields = bad
		return e
	}
	if _, err := a.awaitConsistency(w, r); err != nil {
		return err
	}
	if err := a.freshness(w, r); err != nil {
		return err
	}
	id := userID(r.Context()).String()
	s, err := a.readModel.Stats(r.Context(), id)
	resp := statsResponse{UserID: id}
	switch {
	case errors.Is(err, readside.ErrNotFound):
		// Not projected yet (a new user): zero counts, updated_at null.
	case err != nil:
		return fmt.Errorf("%w: stats: %w", errReadModel, err)
	default:
		t := s.UpdatedAt.UTC()
		resp.Open, resp.Completed, resp.Total, resp.UpdatedAt = s.Open, s.Completed, s.Total, &t
	}
	return writeJSON(w, http.StatusOK, resp)
}

// freshness sets the watermark headers; before the first applied event they are absent.
func (a *api) freshness(w http.ResponseWriter, r *http.Request) error {
	wm, err := a.readModel.Watermark(r.Context())
	switch {
	case errors.Is(err, readside.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("%w: watermark: %w", errReadModel, err)
	}
	setFreshness(w, wm)
	return nil
}

func setFreshness(w http.ResponseWriter, wm readmodel.Watermark) {
	w.Header().Set(ProjectionSeqHeader, strconv.FormatUint(wm.StreamSeq, 10))
	w.Header().Set(ProjectionWatermarkHeader, wm.OccurredAt.UTC().Format(time.RFC3339Nano))
}

// Polling of the read model while a read waits for a write: quick at first (the
// projector usually applies a write within tens of milliseconds), then every
// consistencyPollMax.
const (
	consistencyPollMin = 10 * time.Millisecond
	consistencyPollMax = 100 * time.Millisecond
)

// awaitConsistency waits, at most a.rywWait and never past the request's context, until
// the read model includes the write named by the request's Consistency-Token (header,
// or the consistency_token query parameter), and says in the Consistency header
// whether it does: fresh or stale. Staleness is never an error: the caller answers
// what the read model has. It returns when the read model was seen to include the
// write (zero without a token, or when stale), so that a cached answer older than that
// is not used.
func (a *api) awaitConsistency(w http.ResponseWriter, r *http.Request) (time.Time, error) {
	raw, where := r.Header.Get(consistency.TokenHeader), "header:"+consistency.TokenHeader
	if q := r.URL.Query(); q.Has(consistency.QueryParam) {
		if raw != "" {
			e := newError(kindInvalidParameter, "send the consistency token as the %s header or the %s parameter, not both",
				consistency.TokenHeader, consistency.QueryParam)
			e.fields = []problem.FieldError{{Pointer: "query:" + consistency.QueryParam, Detail: "must not be sent with the header"}}
			return time.Time{}, e
		}
		raw, where = q.Get(consistency.QueryParam), "query:"+consistency.QueryParam
	}
	if raw == "" {
		return time.Time{}, nil
	}
	tok, err := consistency.Parse(raw)
	if err == nil && tok.Owner != userID(r.Context()) {
		err = errors.New("another user's token")
	}
	if err != nil {
		e := newError(kindInvalidHeader, "the consistency token is not one this API gave the caller; send the %s of one of your writes",
			consistency.TokenHeader)
		e.fields = []problem.FieldError{{Pointer: where, Detail: "must be the Consistency-Token of one of your writes"}}
		return time.Time{}, e
	}
	ctx := r.Context()
	deadline := time.Now().Add(a.rywWait)
	wait := consistencyPollMin
	for {
		user, stats, err := a.readModel.Versions(ctx, tok.Owner.String())
		switch {
		case ctx.Err() != nil:
			return time.Time{}, ctx.Err()
		case err != nil:
			return time.Time{}, fmt.Errorf("%w: consistency: %w", errReadModel, err)
		case tok.ReachedBy(user, stats):
			w.Header().Set(consistency.StateHeader, consistency.Fresh)
			return time.Now(), nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			w.Header().Set(consistency.StateHeader, consistency.Stale)
			return time.Time{}, nil
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, consistencyPollMax)
	}
}
