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
	p.GaugeOf("pflex_registered", "1 once the MDM leader has registered this component.", b(st.Registered), node...)
	p.GaugeOf("pflex_leader_known", "1 while this component knows the MDM leader.", b(st.LeaderKnown), node...)
	p.CounterOf("pflex_heartbeats_total", "Heartbeats the MDM leader accepted.", float64(st.Heartbeats), node...)
	p.CounterOf("pflex_heartbeats_relayed_total", "Heartbeats another MDM passed on to the leader, which did not answer directly.", float64(st.RelayedHeartbeats), node...)
	p.GaugeOf("pflex_heartbeat_failures", "Heartbeats failed in a row.", float64(st.HeartbeatFailures), node...)
	p.CounterOf("pflex_leader_switches_total", "Times this component followed a new MDM leader.", float64(st.LeaderSwitches), node...)
	if st.LastHeartbeatAgeMS >= 0 {
		p.GaugeOf("pflex_last_heartbeat_age_seconds", "Time since the last accepted heartbeat.", float64(st.LastHeartbeatAgeMS)/1000, node...)
	}
}
