package app_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestStandbyIsReady: with more replicas than partitions, the replica holding the
// stream's one partition and the standby are both ready (readiness is "a live member
// of the group", not "holds partitions"), the holder reports the partition and its
// backlog in its metrics, and the standby reports none.
func TestStandbyIsReady(t *testing.T) {
	env := projtest.NewUnpartitioned(t)
	env.Partition(t, 1)
	env.Setenv(t)
	ctx := sharedtest.Context(t, 2*time.Minute)

	metricsOf := func(admin string) string { return sharedtest.Fetch(t, ctx, "http://"+admin+"/metrics") }
	start := func() string {
		admin := setAdminAddr(t)
		startRun(t, ctx, env)
		// Ready, which also means the run has read its configuration: the next one
		// may change the environment.
		awaitReady(t, admin)
		return admin
	}
	first := start()
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		m := metricsOf(first)
		return strings.Contains(m, "projector_partitions_held 1") && strings.Contains(m, `projector_partition_pending{partition="p0"} 0`), m
	})
	second := start()
	// Either may hold the partition once both are members (the group assigns it to
	// one of them by name); the other stands by.
	holds := func(m string) bool {
		return strings.Contains(m, "projector_partitions_held 1") && strings.Contains(m, `projector_partition_pending{partition="p0"}`)
	}
	stands := func(m string) bool {
		return strings.Contains(m, "projector_partitions_held 0") && !strings.Contains(m, "projector_partition_pending{")
	}
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		a, b := metricsOf(first), metricsOf(second)
		return holds(a) && stands(b) || holds(b) && stands(a), "first:\n" + a + "\nsecond:\n" + b
	})
	for _, admin := range []string{first, second} {
		if code, body := get(t, "http://"+admin+"/readyz"); code != http.StatusOK {
			t.Fatalf("%s: readyz = %d %s", admin, code, body)
		}
	}
}
