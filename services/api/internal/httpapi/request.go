package httpapi

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
)

const (
	mediaJSON       = "application/json"
	mediaMergePatch = "application/merge-patch+json"
)

// readBody checks the media type (one of accept) and reads at most limit bytes.
func readBody(r *http.Request, limit int64, accept ...string) ([]byte, error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !slices.Contains(accept, mt) {
		return nil, newError(kindUnsupportedMedia, "the body must be sent as %s", strings.Join(accept, " or "))
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, newError(kindUnsupportedMedia, "the body must be UTF-8 encoded")
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The server's ReadTimeout cut off a client that sends its body too slowly.
		return nil, newError(kindRequestTimeout, "the body did not arrive in time")
	case err != nil:
		// A broken chunked encoding, or a client that went away mid-body.
		return nil, newError(kindBodyUnreadable, "the body could not be read completely")
	}
	if int64(len(b)) > limit {
		return nil, newError(kindBodyTooLarge, "the body must be at most %d bytes", limit)
	}
	return b, nil
}

// readParsed reads the body (see readBody) and parses it with parse.
func readParsed[T any](r *http.Request, limit int64, parse func([]byte) (T, error), accept ...string) (T, error) {
	body, err := readBody(r, limit, accept...)
	if err != nil {
		var none T
		return none, err
	}
	return parse(body)
}

// pathID parses the {id} of the route.
func pathID(r *http.Request) (uuid.UUID, error) {
	raw := chi.URLParam(r, "id")
	id, err := uuid.Parse(raw)
	// uuid.Parse also takes braces, urn: prefixes and no hyphens; ids have one spelling.
	if err != nil || len(raw) != 36 {
		e := newError(kindInvalidParameter, "the id in the path must be a UUID")
		e.fields = []problem.FieldError{{Pointer: "path:id", Detail: "must be a UUID such as 0190a8a4-3c6e-7b2e-9a6e-3f0c2d1e4b5a"}}
		return uuid.Nil, e
	}
	return id, nil
}

// ifMatch reads the expected version from If-Match: 0 when absent or "*". Only one
// strong entity tag is accepted; a weak tag can never match under the strong
// comparison that If-Match uses (RFC 9110), so it always fails the precondition.
func ifMatch(r *http.Request) (version int64, weak bool, err error) {
	vals := r.Header.Values("If-Match")
	if len(vals) == 0 {
		return 0, false, nil
	}
	v := strings.TrimSpace(strings.Join(vals, ","))
	if v == "*" {
		return 0, false, nil
	}
	if rest, ok := strings.CutPrefix(v, "W/"); ok {
		v, weak = rest, true
	}
	n, perr := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(v, `"`), `"`), 10, 64)
	if perr != nil || n < 1 || len(v) < 3 || v[0] != '"' || v[len(v)-1] != '"' {
		e := newError(kindInvalidHeader, `If-Match must be one entity tag such as "3" (from ETag), or *`)
		e.fields = []problem.FieldError{{Pointer: "header:If-Match", Detail: "must be a quoted version such as \"3\""}}
		return 0, false, e
	}
	return n, weak, nil
}

// readPatch reads a conditional merge patch: the version If-Match names and the body
// parsed by parse. A weak If-Match fails the precondition with mismatch only once the
// body has been read and parsed, so that a bad body is reported first.
func readPatch[P any](r *http.Request, limit int64, parse func([]byte) (P, error), mismatch error) (int64, P, error) {
	var none P
	version, weak, err := ifMatch(r)
	if err != nil {
		return 0, none, err
	}
	p, err := readParsed(r, limit, parse, mediaJSON, mediaMergePatch)
	if err != nil {
		return 0, none, err
	}
	if weak {
		return 0, none, mismatch
	}
	return version, p, nil
}

// notModified answers 304 when If-None-Match names version's entity tag (or is *),
// and otherwise sets the ETag for the full answer. If-None-Match uses the weak
// comparison (RFC 9110 13.1.2): W/"3" matches "3". It reports whether it answered.
func notModified(w http.ResponseWriter, r *http.Request, version int64) bool {
	tag := etag(version)
	w.Header().Set("ETag", tag)
	for _, v := range r.Header.Values("If-None-Match") {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
			if t == tag || t == "*" {
				w.Header().Set("Cache-Control", "no-store") // as the full answer would
				w.WriteHeader(http.StatusNotModified)
				return true
			}
		}
	}
	return false
}

// etag is the strong entity tag of a version.
func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// queryParams checks that q has only the allowed names, each at most once.
func queryParams(q url.Values, allowed ...string) []problem.FieldError {
	var errs []problem.FieldError
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		switch {
		case !slices.Contains(allowed, name):
			errs = append(errs, problem.FieldError{Pointer: "query:" + name, Detail: "is not a parameter of this request"})
		case len(q[name]) > 1:
			errs = append(errs, problem.FieldError{Pointer: "query:" + name, Detail: "must be given at most once"})
		}
	}
	return errs
}
