package problem_test

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
)

func TestWrite(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	problem.Write(rec, problem.Details{
		Type: problem.TypeURI("validation-failed"), Title: "Validation failed", Status: 422,
		Errors: []problem.FieldError{{Pointer: "/title", Detail: "must not be empty"}},
	})
	if rec.Code != 422 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["type"] != "urn:outboxtodo:problem:validation-failed" || got["status"] != float64(422) {
		t.Fatalf("body = %v", got)
	}
	errs, _ := got["errors"].([]any)
	if len(errs) != 1 || errs[0].(map[string]any)["pointer"] != "/title" {
		t.Fatalf("errors = %v", got["errors"])
	}
	if _, ok := got["detail"]; ok {
		t.Fatal("empty detail should be omitted")
	}
}
