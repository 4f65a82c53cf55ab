package systest

import (
	"sort"
	"testing"
	"time"
)

// BenchmarkLeaderKillHeartbeatFailover: three MDM processes (default raft timing), two SDSs and
// an SDC heartbeating every 200 ms. Ten times: SIGKILL the leader and measure until every
// component's last successful heartbeat went to the new leader.
func BenchmarkLeaderKillHeartbeatFailover(b *testing.B) {
	c := startCluster(b, "5s")
	comps := []component{c.sds("sds-1", testKey()), c.sds("sds-2", testKey()), c.sdc("sdc-1")}
	for _, x := range comps {
		x.Start()
	}
	c.waitFor("components registered", 20*time.Second, func() bool {
		for _, x := range comps {
			if st, ok := x.status(); !ok || !st.Registered || st.Heartbeats == 0 {
				return false
			}
		}
		return true
	})
	var took []time.Duration
	for n := 0; n < b.N; n++ {
		for r := 0; r < 10; r++ {
			c.mdms.WaitConverged(30 * time.Second)
			leader := c.mdms.WaitLeader(10 * time.Second)
			killed := time.Now()
			c.mdms.Kill9(leader)
			newLeader := c.mdms.WaitLeader(10 * time.Second)
			want := c.mdms.Cfgs[newLeader].APIAddr
			for {
				all := true
				for _, x := range comps {
					st, ok := x.status()
					if !ok || st.LastHeartbeatLeader != want || st.LastHeartbeatAgeMS < 0 ||
						time.Since(killed) < time.Duration(st.LastHeartbeatAgeMS)*time.Millisecond {
						all = false
					}
				}
				if all || time.Since(killed) > 30*time.Second {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			d := time.Since(killed)
			took = append(took, d)
			b.Logf("rep %d: killed %s, every SDS and SDC heartbeating to %s after %s", r+1,
				c.mdms.Cfgs[leader].NodeID, c.mdms.Cfgs[newLeader].NodeID, d.Round(time.Millisecond))
			c.mdms.Start(leader)
		}
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "median-ms")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "worst-ms")
}
