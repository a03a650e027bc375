package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/consistency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
)

// signUp creates a user. Its Idempotency-Key is scoped by the request's fingerprint:
// a client without a token has no identity of its own, and its address is no better
// (clients behind one NAT share it; a mobile client's retry may come from another), so
// the key and the exact body together name the request. Two clients that pick the same
// key for different sign-ups therefore never collide; two that send the same key and
// body ask for the same sign-up, which only one of them can have anyway (the email is
// unique). A replay whose user has since been deleted answers 410 user-deleted. A
// replay shows no token (only its hash is stored): the client signs in with the
// password, if the sign-up set one (POST /v1/sessions).
func (a *api) signUp(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r, a.maxBody, mediaJSON)
	if err != nil {
		return err
	}
	fingerprinted := withoutPassword(body)
	scope := idempotency.SignUpScope(idempotency.Fingerprint(r.Method, r.URL.Path, fingerprinted))
	return a.idempotentChecked(w, r, scope, fingerprinted, a.signUpStillHolds, func(rec *idempotency.Record) error {
		su, err := users.ParseSignUp(body)
		if err != nil {
			return err
		}
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("new user id: %w", err)
		}
		var hash string
		if su.Password != "" {
			if hash, err = a.passwords.Hash(r.Context(), su.Password); err != nil {
				return err
			}
		}
		u := su.User(id, a.store.Now())
		secret, token, err := tokens.Issue(u.ID, u.CreatedAt, tokens.DefaultExpiry(u.CreatedAt, a.tokenTTL))
		if err != nil {
			return fmt.Errorf("new token id: %w", err)
		}
		// A new user's documents and stats start at version 1.
		headers := http.Header{"Location": {"/v1/users/me"}, "Etag": {etag(u.Version)},
			consistency.TokenHeader: {consistency.Token{Owner: u.ID, UserVersion: u.Version, StatsVersion: 1}.String()}}
		if rec != nil {
			if rec.Response, err = response(http.StatusCreated, headers, newSignUpResponse(u, "", token)); err != nil {
				return err
			}
		}
		if err := a.store.CreateUser(r.Context(), u, hash, token, traceContext(r.Context()), rec); err != nil {
			return err
		}
		copyHeaders(w, headers)
		return writeJSON(w, http.StatusCreated, newSignUpResponse(u, secret, token))
	})
}

// signUpStillHolds refuses the replay of a sign-up whose user has been deleted since:
// answering 201 with a user that no longer exists would mislead the client.
func (a *api) signUpStillHolds(r *http.Request, stored idempotency.Response) error {
	var resp struct {
		User struct {
			ID uuid.UUID `json:"id"`
		} `json:"user"`
	}
	if err := json.Unmarshal(stored.Body, &resp); err != nil {
		return fmt.Errorf("decode stored sign-up: %w", err)
	}
	_, err := a.store.User(r.Context(), resp.User.ID)
	if errors.Is(err, users.ErrNotFound) {
		return errUserDeleted
	}
	return err
}

func (a *api) getMe(w http.ResponseWriter, r *http.Request) error {
	u, err := a.store.User(r.Context(), userID(r.Context()))
	if err != nil {
		return err
	}
	if notModified(w, r, u.Version) {
		return nil
	}
	return writeJSON(w, http.StatusOK, u)
}

func (a *api) patchMe(w http.ResponseWriter, r *http.Request) error {
	want, p, err := readPatch(r, a.maxBody, users.ParsePatch, users.ErrVersionMismatch)
	if err != nil {
		return err
	}
	u, err := a.store.UpdateUser(r.Context(), userID(r.Context()), want, p, traceContext(r.Context()))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(u.Version))
	w.Header().Set(consistency.TokenHeader, consistency.Token{Owner: u.ID, UserVersion: u.Version}.String())
	return writeJSON(w, http.StatusOK, u)
}

// deleteMe deletes the user and, with them, their tokens. This replica forgets the
// token of the request at once; the user's other tokens, and this one on other
// replicas, stop working within the token cache's TTL.
func (a *api) deleteMe(w http.ResponseWriter, r *http.Request) error {
	want, weak, err := ifMatch(r)
	if err != nil {
		return err
	}
	if weak {
		return users.ErrVersionMismatch
	}
	id := userID(r.Context())
	v, err := a.store.DeleteUser(r.Context(), id, want, traceContext(r.Context()))
	if err != nil {
		return err
	}
	a.tokens.Forget(currentToken(r.Context()).Hash)
	w.Header().Set("ETag", etag(v))
	w.Header().Set(consistency.TokenHeader, consistency.Token{Owner: id, UserVersion: v}.String())
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// tokenResponse is the answer to issuing a token. The token (its secret) is shown
// once: a replay under the same Idempotency-Key answers without it, but with its id, so
// that a client whose first answer was lost can revoke the token it never saw.
type tokenResponse struct {
	tokens.Token
	Secret string `json:"token,omitempty"`
}

// issueToken gives the user another token, so that a client can switch to a new
// token before it revokes the old one. The body is optional: {"expires_at": ...}.
func (a *api) issueToken(w http.ResponseWriter, r *http.Request) error {
	var body []byte
	if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
		var err error
		if body, err = readBody(r, a.maxBody, mediaJSON); err != nil {
			return err
		}
	}
	owner := userID(r.Context())
	return a.idempotent(w, r, idempotency.UserScope(owner.String()), body, func(rec *idempotency.Record) error {
		now := a.store.Now()
		expires, err := tokens.ParseIssue(body, now, a.tokenTTL)
		if err != nil {
			return err
		}
		secret, token, err := tokens.Issue(owner, now, expires)
		if err != nil {
			return fmt.Errorf("new token id: %w", err)
		}
		if rec != nil {
			if rec.Response, err = response(http.StatusCreated, http.Header{}, tokenResponse{Token: token}); err != nil {
				return err
			}
		}
		if err := a.store.CreateToken(r.Context(), token, rec); err != nil {
			return err
		}
		return writeJSON(w, http.StatusCreated, tokenResponse{Token: token, Secret: secret})
	})
}

type tokenList struct {
	Items []tokenListItem `json:"items"`
}

type tokenListItem struct {
	tokens.Token
	// Current marks the token the request was authenticated with.
	Current bool `json:"current"`
}

// listTokens lists the caller's live tokens, oldest first: ids, times, never secrets.
func (a *api) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := a.store.Tokens(r.Context(), userID(r.Context()), a.store.Now())
	if err != nil {
		return err
	}
	current := currentToken(r.Context()).ID
	out := tokenList{Items: make([]tokenListItem, 0, len(ts))}
	for _, t := range ts {
		out.Items = append(out.Items, tokenListItem{Token: t, Current: t.ID == current})
	}
	return writeJSON(w, http.StatusOK, out)
}

// revokeToken revokes one of the caller's tokens by id; another user's token is not
// found, like a missing one.
func (a *api) revokeToken(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	hash, err := a.store.RevokeToken(r.Context(), userID(r.Context()), id)
	if err != nil {
		return err
	}
	a.tokens.Forget(hash)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeCurrentToken revokes the token the request was authenticated with. A token
// revoked meanwhile by another request is revoked all the same: 204.
func (a *api) revokeCurrentToken(w http.ResponseWriter, r *http.Request) error {
	t := currentToken(r.Context())
	if _, err := a.store.RevokeToken(r.Context(), t.UserID, t.ID); err != nil && !errors.Is(err, tokens.ErrNotFound) {
		return err
	}
	a.tokens.Forget(t.Hash)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *api) createTodo(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r, a.maxBody, mediaJSON)
	if err != nil {
		return err
	}
	owner := userID(r.Context())
	// A replay names the owner's current stats version, at least the one the write
	// left: the stored response was written before that was known.
	replayPosition := func(r *http.Request, _ idempotency.Response) error {
		v, err := a.store.StatsVersion(r.Context(), owner)
		if err != nil {
			return err
		}
		w.Header().Set(consistency.TokenHeader, consistency.Token{Owner: owner, StatsVersion: v}.String())
		return nil
	}
	return a.idempotentChecked(w, r, idempotency.UserScope(owner.String()), body, replayPosition, func(rec *idempotency.Record) error {
		n, err := todos.ParseNew(body)
		if err != nil {
			return err
		}
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("new todo id: %w", err)
		}
		t := n.Todo(id, owner, a.store.Now())
		headers := http.Header{"Location": {"/v1/todos/" + t.ID.String()}, "Etag": {etag(t.Version)}}
		if rec != nil {
			if rec.Response, err = response(http.StatusCreated, headers, t); err != nil {
				return err
			}
		}
		statsVersion, err := a.store.CreateTodo(r.Context(), t, traceContext(r.Context()), rec)
		if err != nil {
			return err
		}
		copyHeaders(w, headers)
		w.Header().Set(consistency.TokenHeader, consistency.Token{Owner: owner, StatsVersion: statsVersion}.String())
		return writeJSON(w, http.StatusCreated, t)
	})
}

func (a *api) getTodo(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	t, err := a.store.Todo(r.Context(), userID(r.Context()), id)
	if err != nil {
		return err
	}
	if notModified(w, r, t.Version) {
		return nil
	}
	return writeJSON(w, http.StatusOK, t)
}

func (a *api) patchTodo(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	want, p, err := readPatch(r, a.maxBody, todos.ParsePatch, todos.ErrVersionMismatch)
	if err != nil {
		return err
	}
	owner := userID(r.Context())
	t, statsVersion, err := a.store.UpdateTodo(r.Context(), owner, id, want, p, traceContext(r.Context()))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(t.Version))
	w.Header().Set(consistency.TokenHeader, consistency.Token{Owner: owner, StatsVersion: statsVersion}.String())
	return writeJSON(w, http.StatusOK, t)
}

func (a *api) deleteTodo(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	want, weak, err := ifMatch(r)
	if err != nil {
		return err
	}
	if weak {
		return todos.ErrVersionMismatch
	}
	owner := userID(r.Context())
	v, statsVersion, err := a.store.DeleteTodo(r.Context(), owner, id, want, traceContext(r.Context()))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(v))
	w.Header().Set(consistency.TokenHeader, consistency.Token{Owner: owner, StatsVersion: statsVersion}.String())
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Page sizes of GET /v1/todos.
const (
	defaultLimit = 50
	maxLimit     = 200
)

type todoPage struct {
	Items      []todos.Todo `json:"items"`
	NextCursor *string      `json:"next_cursor"`
}

// listQuery is the parsed query of GET /v1/todos.
type listQuery struct {
	filter    todos.Filter
	limit     int
	cursor    string
	hasCursor bool
}

// parseListQuery reads the query of GET /v1/todos, reporting every invalid parameter.
func parseListQuery(q url.Values) (listQuery, error) {
	bad := queryParams(q, "limit", "cursor", "completed", "due_before", "due_after", "updated_since")
	lq := listQuery{limit: defaultLimit, cursor: q.Get("cursor"), hasCursor: q.Has("cursor")}
	if s := q.Get("limit"); q.Has("limit") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			bad = append(bad, problem.FieldError{Pointer: "query:limit", Detail: fmt.Sprintf("must be an integer from 1 to %d", maxLimit)})
		}
		lq.limit = n
	}
	if s := q.Get("completed"); q.Has("completed") {
		b, err := strconv.ParseBool(s)
		if err != nil || (s != "true" && s != "false") {
			bad = append(bad, problem.FieldError{Pointer: "query:completed", Detail: "must be true or false"})
		}
		lq.filter.Completed = &b
	}
	lq.filter.DueBefore = timeParam(q, "due_before", &bad)
	lq.filter.DueAfter = timeParam(q, "due_after", &bad)
	lq.filter.UpdatedSince = timeParam(q, "updated_since", &bad)
	if len(bad) > 0 {
		e := newError(kindInvalidParameter, "the query has invalid parameters; see errors")
		e.fields = bad
		return listQuery{}, e
	}
	return lq, nil
}

func (a *api) listTodos(w http.ResponseWriter, r *http.Request) error {
	owner := userID(r.Context())
	lq, err := parseListQuery(r.URL.Query())
	if err != nil {
		return err
	}
	var after uuid.UUID
	if lq.hasCursor {
		// The cursor is bound to the owner: another user's cursor is refused here and
		// never reaches a query, which is scoped by owner in any case.
		if after, err = a.cursors.Decode(lq.cursor, owner, lq.filter); err != nil {
			return err
		}
	}
	items, err := a.store.ListTodos(r.Context(), owner, lq.filter, after, lq.limit+1)
	if err != nil {
		return err
	}
	page := todoPage{Items: items}
	if len(items) > lq.limit {
		page.Items = items[:lq.limit]
		next := a.cursors.Encode(owner, lq.filter, page.Items[lq.limit-1].ID)
		page.NextCursor = &next
	}
	if page.Items == nil {
		page.Items = []todos.Todo{}
	}
	return writeJSON(w, http.StatusOK, page)
}

// timeParam parses an optional RFC 3339 query parameter.
func timeParam(q url.Values, name string, bad *[]problem.FieldError) *time.Time {
	if !q.Has(name) {
		return nil
	}
	t, err := todos.ParseTime(q.Get(name))
	if err != nil {
		*bad = append(*bad, problem.FieldError{Pointer: "query:" + name, Detail: "must be an RFC 3339 date-time such as 2030-01-02T15:04:05Z"})
		return nil
	}
	return &t
}

// idempotent runs create at most once per Idempotency-Key in scope. Without a key it
// just runs create(nil). With one, a stored response for the same request is replayed,
// a stored response for another request is refused, and otherwise create runs with a
// record whose Response it must fill before it writes; a concurrent duplicate that
// committed first is replayed.
func (a *api) idempotent(w http.ResponseWriter, r *http.Request, scope string, body []byte, create func(*idempotency.Record) error) error {
	return a.idempotentChecked(w, r, scope, body, nil, create)
}

// idempotentChecked is idempotent with a check that a stored response still holds
// before it is replayed (nil: it always does); the check's error is the answer instead.
func (a *api) idempotentChecked(w http.ResponseWriter, r *http.Request, scope string, body []byte,
	holds func(*http.Request, idempotency.Response) error, create func(*idempotency.Record) error) error {
	vals := r.Header.Values(idempotency.Header)
	if len(vals) == 0 {
		return create(nil)
	}
	if len(vals) > 1 || !idempotency.ValidKey(vals[0]) {
		return idempotency.ErrInvalidKey
	}
	rec := &idempotency.Record{Scope: scope, Key: vals[0], Fingerprint: idempotency.Fingerprint(r.Method, r.URL.Path, body)}
	if done, err := a.replay(w, r, rec, holds); done || err != nil {
		return err
	}
	err := create(rec)
	if !errors.Is(err, idempotency.ErrRace) {
		return err
	}
	if done, err := a.replay(w, r, rec, holds); done || err != nil {
		return err
	}
	return fmt.Errorf("idempotency key %q lost a race but no stored response was found", rec.Key)
}

// replay answers with the stored response of rec's key, if there is one and it holds.
func (a *api) replay(w http.ResponseWriter, r *http.Request, rec *idempotency.Record, holds func(*http.Request, idempotency.Response) error) (bool, error) {
	stored, ok, err := a.store.Idempotency(r.Context(), rec.Scope, rec.Key)
	if err != nil || !ok {
		return false, err
	}
	if string(stored.Fingerprint) != string(rec.Fingerprint) {
		return false, errIdempotencyReused
	}
	if holds != nil {
		if err := holds(r, stored.Response); err != nil {
			return false, err
		}
	}
	copyHeaders(w, stored.Response.Headers)
	w.Header().Set("Idempotent-Replayed", "true")
	writeRaw(w, stored.Response.Status, stored.Response.Body)
	return true, nil
}

func response(status int, headers http.Header, v any) (idempotency.Response, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return idempotency.Response{}, fmt.Errorf("encode response: %w", err)
	}
	return idempotency.Response{Status: status, Headers: headers, Body: b}, nil
}

func copyHeaders(w http.ResponseWriter, h http.Header) {
	for k, vs := range h {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
}
