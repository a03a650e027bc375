package partition

// The gauges' readings, for the group's tests.
var (
	Durables = durables
	Totals   = totals
)
