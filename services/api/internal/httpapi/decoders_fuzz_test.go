package httpapi

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
)

// The fuzz targets here cover the decoders of headers and query parameters; body
// decoders are fuzzed in the todos and users packages, cursors in todos, client
// addresses in clientaddr. Their seed corpora run with every go test; make fuzz runs
// them longer.

func FuzzIfMatch(f *testing.F) {
	for _, s := range []string{`"1"`, `W/"2"`, `*`, ``, `1`, `"0"`, `"-1"`, `"9223372036854775808"`, `"1", "2"`, ` "3" `, `W/`, `""`, `"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r := &http.Request{Header: http.Header{"If-Match": {v}}}
		n, weak, err := ifMatch(r)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.kind != kindInvalidHeader || len(ae.fields) != 1 {
				t.Fatalf("error %v", err)
			}
			return
		}
		if n < 0 || (n == 0 && weak) {
			t.Fatalf("version %d weak %v from %q", n, weak, v)
		}
		if n > 0 && !weak {
			// What we accept is what we send in ETag.
			back, w, err := ifMatch(&http.Request{Header: http.Header{"If-Match": {etag(n)}}})
			if err != nil || back != n || w {
				t.Fatalf("%q read as %d, whose ETag reads as %d %v %v", v, n, back, w, err)
			}
		}
	})
}

func FuzzListQuery(f *testing.F) {
	for _, s := range []string{"", "limit=5", "limit=0", "limit=201", "limit=-1", "limit=1&limit=2", "completed=true", "completed=1",
		"due_before=2030-01-02T15:04:05Z&due_after=2030-01-01T00:00:00%2B02:00", "due_before=soon", "sort=title", "cursor=abc",
		"%zz", "limit=%00", ";;&&==", "completed=&cursor="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw) // what r.URL.Query() does: bad pairs are dropped
		lq, err := parseListQuery(q)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.kind != kindInvalidParameter || len(ae.fields) == 0 {
				t.Fatalf("error %v", err)
			}
			return
		}
		if lq.limit < 1 || lq.limit > maxLimit {
			t.Fatalf("limit %d from %q", lq.limit, raw)
		}
		for name, vs := range q {
			if len(vs) != 1 {
				t.Fatalf("%s given %d times was accepted", name, len(vs))
			}
		}
		if lq.filter.Completed != nil && q.Get("completed") != "true" && q.Get("completed") != "false" {
			t.Fatalf("completed=%q accepted", q.Get("completed"))
		}
	})
}
