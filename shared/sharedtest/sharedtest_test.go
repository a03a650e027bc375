package sharedtest_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestLogBuffer(t *testing.T) {
	t.Parallel()
	var buf sharedtest.LogBuffer
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { fmt.Fprintf(&buf, "{\"n\":%d}\n", i) })
	}
	wg.Wait()
	lines, err := buf.Lines()
	if err != nil || len(lines) != 20 {
		t.Fatalf("Lines = %d lines, %v; want 20, nil", len(lines), err)
	}
	fmt.Fprintln(&buf, "not json")
	lines, err = buf.Lines()
	if err == nil || len(lines) != 20 {
		t.Fatalf("with a bad line: %d lines, err %v; want 20 and an error", len(lines), err)
	}
}
