// Package procstat reads a process's CPU time and memory from /proc (Linux), so the
// load generator can report each service's CPU share and resident memory over a run
// without instrumenting the services.
package procstat

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat; it is 100 on
// every Linux architecture Go supports.
const ClockTicks = 100

// Usage is one reading of a process.
type Usage struct {
	CPU    time.Duration // user plus system time since the process started
	RSS    int64         // resident set, bytes
	PeakRS int64         // peak resident set (VmHWM), bytes
}

// ParseStat reads user plus system CPU time from the text of /proc/<pid>/stat. The
// command name, in parentheses, may itself hold spaces and parentheses, so fields are
// counted from the last ')'.
func ParseStat(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	utime, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat utime: %w", err)
	}
	stime, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat stime: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / ClockTicks, nil
}

// ParseStatus reads VmRSS and VmHWM (in bytes) from the text of /proc/<pid>/status.
func ParseStatus(status string) (rss, hwm int64, err error) {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("status %s: unexpected %q", key, val)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("status %s: %w", key, err)
		}
		if key == "VmRSS" {
			rss = kb * 1024
		} else {
			hwm = kb * 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("status: no VmRSS")
	}
	return rss, hwm, nil
}

// Read reads pid's usage now.
func Read(pid int) (Usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	cpu, err := ParseStat(string(stat))
	if err != nil {
		return Usage{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, fmt.Errorf("read status of %d: %w", pid, err)
	}
	rss, hwm, err := ParseStatus(string(status))
	if err != nil {
		return Usage{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return Usage{CPU: cpu, RSS: rss, PeakRS: hwm}, nil
}

// Children are the direct children of pid. The kernel lists a child under the thread
// that started it, and a Go program starts processes from any of its threads, so every
// thread's list is read.
func Children(pid int) ([]int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("threads of %d: %w", pid, err)
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue // the thread has exited since the listing
		}
		for _, f := range strings.Fields(string(b)) {
			c, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("children of %d: %w", pid, err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// Comm is the command name of pid.
func Comm(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "", fmt.Errorf("comm of %d: %w", pid, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// LoadAvg is the one-minute load average.
func LoadAvg() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, fmt.Errorf("read loadavg: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("loadavg: empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("loadavg: %w", err)
	}
	return v, nil
}
