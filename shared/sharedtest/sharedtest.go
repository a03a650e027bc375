// Package sharedtest holds test helpers the modules' tests share. Production code never
// imports it.
package sharedtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
)

// LogBuffer collects log output written from many goroutines (a server's, a child
// process's copier) while a test reads it. The zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines decodes the JSON log lines written so far. It returns every line that decodes,
// and an error naming the first that does not.
func (l *LogBuffer) Lines() ([]map[string]any, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		out      []map[string]any
		firstErr error
	)
	for _, line := range bytes.Split(bytes.TrimSpace(l.b.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("log line %q: %w", line, err)
			}
			continue
		}
		out = append(out, m)
	}
	return out, firstErr
}
