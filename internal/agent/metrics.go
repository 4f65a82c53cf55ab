package agent

import "pflex/internal/promtext"

// WriteMetrics writes the membership part of a component's /metrics: registration, the
// leader it follows and its heartbeats.
func (a *Agent) WriteMetrics(p *promtext.Writer, role string) {
	st := a.Status()
	node := []string{"node", st.ID, "role", role}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	p.Gauge("pflex_registered", "1 once the MDM leader has registered this component.")
	p.Sample("pflex_registered", b(st.Registered), node...)
	p.Gauge("pflex_leader_known", "1 while this component knows the MDM leader.")
	p.Sample("pflex_leader_known", b(st.LeaderKnown), node...)
	p.Counter("pflex_heartbeats_total", "Heartbeats the MDM leader accepted.")
	p.Sample("pflex_heartbeats_total", float64(st.Heartbeats), node...)
	p.Gauge("pflex_heartbeat_failures", "Heartbeats failed in a row.")
	p.Sample("pflex_heartbeat_failures", float64(st.HeartbeatFailures), node...)
	p.Counter("pflex_leader_switches_total", "Times this component followed a new MDM leader.")
	p.Sample("pflex_leader_switches_total", float64(st.LeaderSwitches), node...)
	if st.LastHeartbeatAgeMS >= 0 {
		p.Gauge("pflex_last_heartbeat_age_seconds", "Time since the last accepted heartbeat.")
		p.Sample("pflex_last_heartbeat_age_seconds", float64(st.LastHeartbeatAgeMS)/1000, node...)
	}
}
