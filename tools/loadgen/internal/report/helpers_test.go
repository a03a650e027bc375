package report

import (
	"bytes"
	"strings"
	"testing"
)

// markdown renders r as markdown, fails t for each of wants it does not contain, and
// returns it.
func markdown(t *testing.T, r *Results, wants ...string) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	return md
}
