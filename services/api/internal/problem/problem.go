// Package problem writes RFC 9457 problem details (application/problem+json).
//
// Type is a stable URI a client can switch on; Title is its fixed human summary; Detail
// explains this occurrence and never carries an internal cause.
package problem

import (
	"encoding/json"
	"net/http"
)

// ContentType is the media type of a problem document.
const ContentType = "application/problem+json"

// TypeURI returns the stable type URI of a problem slug such as "validation-failed".
func TypeURI(slug string) string { return "urn:outboxtodo:problem:" + slug }

// Details is one problem document.
type Details struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Errors lists every invalid field of a request, not just the first.
	Errors []FieldError `json:"errors,omitempty"`
	// RequestID lets a client quote the request when it reports the problem.
	RequestID string `json:"request_id,omitempty"`
}

// FieldError is one invalid field. Pointer is a JSON Pointer (RFC 6901) into the request
// body, or the name of a query parameter or header prefixed with "query:" or "header:".
type FieldError struct {
	Pointer string `json:"pointer"`
	Detail  string `json:"detail"`
}

// Write renders p with its status code.
func Write(w http.ResponseWriter, p Details) {
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
