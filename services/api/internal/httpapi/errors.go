package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/idempotency"
	"github.com/outboxtodo/outboxtodo/services/api/internal/input"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// kind is one stable problem type: its slug (the end of its type URI), status and
// title. The slugs are part of the API contract.
type kind struct {
	slug   string
	status int
	title  string
}

var (
	kindMalformedJSON      = kind{"malformed-json", http.StatusBadRequest, "Malformed JSON"}
	kindInvalidUTF8        = kind{"invalid-utf8", http.StatusBadRequest, "Body is not valid UTF-8"}
	kindUnknownField       = kind{"unknown-field", http.StatusBadRequest, "Unknown field"}
	kindInvalidParameter   = kind{"invalid-parameter", http.StatusBadRequest, "Invalid parameter"}
	kindInvalidHeader      = kind{"invalid-header", http.StatusBadRequest, "Invalid header"}
	kindInvalidCursor      = kind{"invalid-cursor", http.StatusBadRequest, "Invalid cursor"}
	kindUnauthorized       = kind{"unauthorized", http.StatusUnauthorized, "Authentication required"}
	kindInvalidCredentials = kind{"invalid-credentials", http.StatusUnauthorized, "Invalid credentials"}
	kindNotFound           = kind{"not-found", http.StatusNotFound, "Not found"}
	kindUserDeleted        = kind{"user-deleted", http.StatusGone, "User deleted"}
	kindMethodNotAllowed   = kind{"method-not-allowed", http.StatusMethodNotAllowed, "Method not allowed"}
	kindEmailTaken         = kind{"email-taken", http.StatusConflict, "Email already registered"}
	kindTooManyTokens      = kind{"too-many-tokens", http.StatusConflict, "Too many tokens"}
	kindTooManyTodos       = kind{"too-many-todos", http.StatusConflict, "Too many todos"}
	kindRateLimited        = kind{"rate-limited", http.StatusTooManyRequests, "Too many requests"}
	kindBodyUnreadable     = kind{"body-unreadable", http.StatusBadRequest, "Body could not be read"}
	kindRequestTimeout     = kind{"request-timeout", http.StatusRequestTimeout, "Request not received in time"}
	kindPreconditionFailed = kind{"precondition-failed", http.StatusPreconditionFailed, "Precondition failed"}
	kindBodyTooLarge       = kind{"body-too-large", http.StatusRequestEntityTooLarge, "Body too large"}
	kindUnsupportedMedia   = kind{"unsupported-media-type", http.StatusUnsupportedMediaType, "Unsupported media type"}
	kindValidation         = kind{"validation-failed", http.StatusUnprocessableEntity, "Validation failed"}
	kindIdempotencyReused  = kind{"idempotency-key-reused", http.StatusUnprocessableEntity, "Idempotency key reused"}
	kindTimeout            = kind{"timeout", http.StatusServiceUnavailable, "Request timed out"}
	kindReadModel          = kind{"read-model-unavailable", http.StatusServiceUnavailable, "Read model unavailable"}
	kindDatabase           = kind{"database-unavailable", http.StatusServiceUnavailable, "Database unavailable"}
	kindOutcomeUnknown     = kind{"outcome-unknown", http.StatusGatewayTimeout, "Outcome unknown"}
	kindInternal           = kind{"internal", http.StatusInternalServerError, "Internal server error"}
)

// kinds are every problem kind the API answers.
var kinds = []kind{kindMalformedJSON, kindInvalidUTF8, kindUnknownField, kindInvalidParameter, kindInvalidHeader, kindInvalidCursor,
	kindUnauthorized, kindInvalidCredentials, kindNotFound, kindUserDeleted, kindMethodNotAllowed, kindEmailTaken, kindTooManyTokens,
	kindTooManyTodos, kindRateLimited, kindBodyUnreadable, kindRequestTimeout, kindPreconditionFailed, kindBodyTooLarge,
	kindUnsupportedMedia, kindValidation, kindIdempotencyReused, kindTimeout, kindReadModel, kindDatabase, kindOutcomeUnknown,
	kindInternal}

// ProblemTypes returns the type URI of every problem the API answers, for the test
// that keeps the OpenAPI document's enum of them complete.
func ProblemTypes() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = problem.TypeURI(k.slug)
	}
	return out
}

// apiError is an error that already knows its problem kind and a detail safe to show.
type apiError struct {
	kind   kind
	detail string
	fields []problem.FieldError
}

func (e *apiError) Error() string { return e.kind.slug + ": " + e.detail }

func newError(k kind, format string, args ...any) *apiError {
	return &apiError{kind: k, detail: fmt.Sprintf(format, args...)}
}

// retryAfterError is err with the time after which a retry can succeed, which its
// answer carries as Retry-After.
type retryAfterError struct {
	wait time.Duration
	err  *apiError
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// errIdempotencyReused is returned when a key comes back with another request.
var errIdempotencyReused = newError(kindIdempotencyReused,
	"this Idempotency-Key was used with a different request; use a new key for a new request")

// errUserDeleted answers the replay of a sign-up whose user was deleted since.
var errUserDeleted = newError(kindUserDeleted,
	"this Idempotency-Key created a user who has been deleted since; the sign-up is not repeated while the key lives (24 hours)")

// toProblem maps err to its problem document through the central table. The second
// result is false for errors that are not the client's doing: those are logged and
// answered with a generic detail that reveals nothing of the cause.
func toProblem(err error) (problem.Details, bool) {
	var (
		ae   *apiError
		ve   *input.ValidationError
		se   *input.SyntaxError
		ufe  *input.UnknownFieldError
		p    problem.Details
		mine = true
	)
	switch {
	case errors.As(err, &ae):
		p = details(ae.kind, ae.detail)
		p.Errors = ae.fields
	case errors.As(err, &ve):
		p = details(kindValidation, "the request has invalid fields; see errors")
		for _, f := range ve.Fields {
			p.Errors = append(p.Errors, problem.FieldError{Pointer: f.Pointer, Detail: f.Detail})
		}
	case errors.As(err, &se):
		p = details(kindMalformedJSON, fmt.Sprintf("the body is not valid JSON (at byte offset %d)", se.Offset))
	case errors.Is(err, input.ErrNotObject):
		p = details(kindMalformedJSON, "the body must be a JSON object")
	case errors.Is(err, input.ErrTrailing):
		p = details(kindMalformedJSON, "the body has data after the JSON object")
	case errors.Is(err, input.ErrInvalidUTF8):
		p = details(kindInvalidUTF8, "the body must be UTF-8 encoded")
	case errors.As(err, &ufe):
		p = details(kindUnknownField, fmt.Sprintf("unknown field(s) in the body: %v", ufe.Fields))
		for _, f := range ufe.Fields {
			p.Errors = append(p.Errors, problem.FieldError{Pointer: "/" + f, Detail: "is not a field of this request"})
		}
	case errors.Is(err, todos.ErrNotFound), errors.Is(err, users.ErrNotFound), errors.Is(err, tokens.ErrNotFound):
		p = details(kindNotFound, "no such resource")
	case errors.Is(err, todos.ErrVersionMismatch), errors.Is(err, users.ErrVersionMismatch):
		p = details(kindPreconditionFailed, "the resource has changed since the version given in If-Match")
	case errors.Is(err, users.ErrPasswordChanged):
		p = details(kindPreconditionFailed, "the password was changed by another request meanwhile; try again")
	case errors.Is(err, todos.ErrInvalidCursor):
		p = details(kindInvalidCursor, "the cursor is malformed or belongs to another query; start again without it")
	case errors.Is(err, users.ErrEmailTaken):
		p = details(kindEmailTaken, "a user with this email address exists already")
	case errors.Is(err, tokens.ErrTooMany):
		p = details(kindTooManyTokens, fmt.Sprintf("a user may hold at most %d live tokens; list them with GET /v1/users/me/tokens "+
			"and revoke one with DELETE /v1/users/me/tokens/{id}", tokens.MaxPerUser))
	case errors.Is(err, todos.ErrTooMany):
		p = details(kindTooManyTodos, "this user holds the most todos a user may have; delete some first")
	case errors.Is(err, idempotency.ErrInvalidKey):
		p = details(kindInvalidHeader, idempotency.ErrInvalidKey.Error())
	case errors.Is(err, sharedpg.ErrCommitUnknown):
		// Before the unavailability check: the cause is a broken connection too, but
		// here the write may have landed.
		p = details(kindOutcomeUnknown, "the database did not confirm whether this write was saved, and it may have been; "+
			"retry with the same Idempotency-Key (POST) or If-Match (PATCH, DELETE): the retry cannot apply it twice")
		mine = false
	case errors.Is(err, errReadModel):
		p = details(kindReadModel, "the leaderboard and stats are unavailable for a moment; writes are not affected; retry shortly")
		mine = false
	case sharedpg.IsUnavailable(err):
		p = details(kindDatabase, "the database is unreachable for a moment; nothing was written; retry shortly")
		mine = false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		p = details(kindTimeout, "the request did not finish in time; retry it")
		mine = false
	default:
		p = details(kindInternal, "an internal error occurred; quote the request id when you report it")
		mine = false
	}
	return p, mine
}

func details(k kind, detail string) problem.Details {
	return problem.Details{Type: problem.TypeURI(k.slug), Title: k.title, Status: k.status, Detail: detail}
}

// writeError renders err as a problem document. Internal causes are logged here, once,
// and never sent to the client.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	p, clientError := toProblem(err)
	p.Instance = r.URL.Path
	p.RequestID = requestID(r.Context())
	switch {
	case p.Status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "":
		w.Header().Set("WWW-Authenticate", `Bearer realm="outboxtodo"`)
	case p.Status == http.StatusServiceUnavailable, p.Status == http.StatusGatewayTimeout:
		w.Header().Set("Retry-After", "1")
	}
	var ra *retryAfterError
	if errors.As(err, &ra) {
		w.Header().Set("Retry-After", strconv.FormatInt(max(1, int64(math.Ceil(ra.wait.Seconds()))), 10))
	}
	if !clientError {
		log.ErrorContext(r.Context(), "request failed", "error", err, "request_id", p.RequestID,
			"method", r.Method, "path", r.URL.Path)
	}
	problem.Write(w, p)
}
