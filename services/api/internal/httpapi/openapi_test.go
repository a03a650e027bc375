package httpapi_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestOpenAPIDocument: every problem type the API answers is in the document's enum
// (and nothing else); every operation has a tag and X-Request-ID, and examples of its
// request body and of every answer with a body (the loader checks them against their
// schemas); no response schema refuses additional properties, so a generated client
// does not break when a field is added; and PublicURL names the server of the
// document served.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	var enum []string
	for _, v := range doc.Components.Schemas["Problem"].Value.Properties["type"].Value.Enum {
		enum = append(enum, v.(string))
	}
	types := httpapi.ProblemTypes()
	slices.Sort(enum)
	slices.Sort(types)
	if !slices.Equal(enum, types) {
		t.Fatalf("the document's problem types:\n%s\nthe API's:\n%s", strings.Join(enum, "\n"), strings.Join(types, "\n"))
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			if len(op.Tags) != 1 {
				t.Errorf("%s: tags %v", name, op.Tags)
			}
			if op.Parameters.GetByInAndName("header", "X-Request-ID") == nil {
				t.Errorf("%s: X-Request-ID is not a parameter", name)
			}
			if op.RequestBody != nil {
				for mt, media := range op.RequestBody.Value.Content {
					if media.Example == nil && len(media.Examples) == 0 {
						t.Errorf("%s: request body %s has no example", name, mt)
					}
				}
			}
			for status, res := range op.Responses.Map() {
				if res.Value.Headers["X-Request-ID"] == nil {
					t.Errorf("%s %s: X-Request-ID is not declared", name, status)
				}
				for mt, media := range res.Value.Content {
					if media.Example == nil && len(media.Examples) == 0 {
						t.Errorf("%s %s: %s has no example", name, status, mt)
					}
					openSchema(t, name+" "+status, media.Schema, map[*openapi3.Schema]bool{})
				}
			}
		}
	}
	h := newHarness(t, func(o *httpapi.Options) { o.PublicURL = "https://todo.example.com" })
	res := h.do(req{method: "GET", path: "/openapi.json", undocumented: true})
	served, err := openapi3.NewLoader().LoadFromData(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	ctx := sharedtest.Context(t, 10*time.Second)
	if err := served.Validate(ctx); err != nil || len(served.Servers) != 1 || served.Servers[0].URL != "https://todo.example.com" {
		t.Fatalf("served document: %v, servers %+v", err, served.Servers)
	}
}

// openSchema fails when a schema reachable from ref refuses additional properties.
func openSchema(t *testing.T, where string, ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
	t.Helper()
	if ref == nil || ref.Value == nil || seen[ref.Value] {
		return
	}
	s := ref.Value
	seen[s] = true
	if has := s.AdditionalProperties.Has; has != nil && !*has {
		t.Errorf("%s: schema %s has additionalProperties: false", where, ref.Ref)
	}
	for _, p := range s.Properties {
		openSchema(t, where, p, seen)
	}
	openSchema(t, where, s.Items, seen)
	for _, group := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
		for _, sub := range group {
			openSchema(t, where, sub, seen)
		}
	}
}
