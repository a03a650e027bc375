package procstat

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	// A command name with a space and a parenthesis, as the kernel prints it.
	stat := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 9 0 100 123456789 4321 18446744073709551615"
	got, err := ParseStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Fatalf("ParseStat = %v, want %v (300 ticks)", got, want)
	}
	for _, bad := range []string{"no parens 1 2 3", "1 (x) S 1 2"} {
		if _, err := ParseStat(bad); err == nil {
			t.Errorf("ParseStat(%q): want an error", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	status := "Name:\tapi\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n"
	rss, hwm, err := ParseStatus(status)
	if err != nil {
		t.Fatal(err)
	}
	if rss != 40960*1024 || hwm != 51200*1024 {
		t.Fatalf("ParseStatus = %d, %d", rss, hwm)
	}
	if _, _, err := ParseStatus("Name:\tkthread\n"); err == nil {
		t.Fatal("no VmRSS: want an error")
	}
	if _, _, err := ParseStatus("VmRSS:\t12 MB\n"); err == nil {
		t.Fatal("unexpected unit: want an error")
	}
}

// The live readers against this very process: /proc is the real interface.
func TestReadSelf(t *testing.T) {
	t.Parallel()
	u, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 || u.PeakRS < u.RSS {
		t.Fatalf("Read(self) = %+v", u)
	}
	if _, err := LoadAvg(); err != nil {
		t.Fatal(err)
	}
	// A child started from whichever thread the runtime picks is found.
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	kids, err := Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kids, cmd.Process.Pid) {
		t.Fatalf("Children = %v, want %d among them", kids, cmd.Process.Pid)
	}
	if name, err := Comm(cmd.Process.Pid); err != nil || name != "sleep" {
		t.Fatalf("Comm = %q, %v", name, err)
	}
}
