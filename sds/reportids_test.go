package sds

import (
	"testing"
	"time"
)

// A report id is counted once per SDC while it is remembered, and again after the retention.
func TestReportIDsCountAReportOnce(t *testing.T) {
	var r reportIDs
	t0 := time.Unix(1000, 0)
	if !r.first(1, 5, t0) || r.first(1, 5, t0.Add(time.Minute)) {
		t.Fatal("a report sent again within the retention was counted again, or the first was not")
	}
	if !r.first(2, 5, t0) {
		t.Fatal("another SDC's report of the same id was not counted")
	}
	if !r.first(1, 0, t0) || !r.first(1, 0, t0) {
		t.Fatal("a report without an id was not counted every time")
	}
	later := t0.Add(reportIDRetention + time.Second)
	if !r.first(1, 6, later) || !r.first(1, 5, later) {
		t.Fatal("a report id past the retention was not forgotten")
	}
	if len(r.seen) != 2 || len(r.queue)-r.head != 2 {
		t.Fatalf("%d ids remembered (%d queued), want the 2 sent last", len(r.seen), len(r.queue)-r.head)
	}
}
