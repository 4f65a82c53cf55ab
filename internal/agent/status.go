package agent

import (
	"encoding/json"
	"net/http"
	"time"
)

// Status is an agent's view of its membership, served as GET /status.
type Status struct {
	ID           string   `json:"id"`
	Capabilities []string `json:"capabilities"`
	Version      string   `json:"version"`
	APIAddr      string   `json:"api_addr"`
	MgmtAddr     string   `json:"mgmt_addr,omitempty"`
	DataAddr     string   `json:"data_addr,omitempty"`
	NBDAddr      string   `json:"nbd_addr,omitempty"`
	GossipAddr   string   `json:"gossip_addr,omitempty"`

	Registered    bool  `json:"registered"`
	SDSID         int64 `json:"sds_id,omitempty"`
	SDCID         int64 `json:"sdc_id,omitempty"`
	Registrations int   `json:"registrations"` // successful registrations, re-registrations included

	LeaderKnown bool   `json:"leader_known"`
	LeaderID    string `json:"leader_id"`
	LeaderAPI   string `json:"leader_api"`
	LeaderTerm  uint64 `json:"leader_term,omitempty"`
	LeaderVia   string `json:"leader_via,omitempty"` // gossip, http or header

	LastHeartbeat       time.Time `json:"last_heartbeat"`                  // zero: none yet
	LastHeartbeatAgeMS  int64     `json:"last_heartbeat_age_ms"`           // -1: none yet
	LastHeartbeatLeader string    `json:"last_heartbeat_leader,omitempty"` // API address that took it
	Heartbeats          uint64    `json:"heartbeats"`
	RelayedHeartbeats   uint64    `json:"relayed_heartbeats"` // of those, passed on by another MDM (the leader did not answer)
	HeartbeatFailures   int       `json:"heartbeat_failures"` // consecutive
	LeaderSwitches      int       `json:"leader_switches"`
	LastError           string    `json:"last_error,omitempty"`

	// LeaseRemainingMS is how long the SDS lease still runs (0: none held, or expired).
	LeaseRemainingMS int64 `json:"lease_remaining_ms"`

	GossipAlive int    `json:"gossip_alive"` // alive members of the pool, this node included
	UptimeMS    int64  `json:"uptime_ms"`
	Role        string `json:"role,omitempty"` // filled by the serving role
}

// Status is a snapshot of the agent's membership state.
func (a *Agent) Status() Status {
	now := time.Now()
	a.mu.Lock()
	st := a.st
	a.mu.Unlock()
	s := Status{
		ID: a.cfg.ID, Capabilities: append([]string(nil), a.cfg.Caps...), Version: a.cfg.Version,
		APIAddr: a.cfg.APIAddr, MgmtAddr: a.cfg.MgmtAddr, DataAddr: a.cfg.DataAddr, NBDAddr: a.cfg.NBDAddr,
		GossipAddr: a.reg.GossipAddr,

		Registered: st.registered, SDSID: st.sdsID, SDCID: st.sdcID, Registrations: st.registrations,

		LastHeartbeat: st.lastHB, LastHeartbeatAgeMS: -1, LastHeartbeatLeader: st.lastHBLeader,
		Heartbeats: st.heartbeats, RelayedHeartbeats: st.relayed, HeartbeatFailures: st.failures, LeaderSwitches: st.switches,
		LastError:        st.lastError,
		UptimeMS:         now.Sub(a.started).Milliseconds(),
		LeaseRemainingMS: max(a.LeaseRemaining().Milliseconds(), 0),
	}
	if !st.lastHB.IsZero() {
		s.LastHeartbeatAgeMS = now.Sub(st.lastHB).Milliseconds()
	}
	if l, ok := a.tracker.Current(); ok {
		s.LeaderKnown, s.LeaderID, s.LeaderAPI, s.LeaderTerm, s.LeaderVia = true, l.ID, l.API, l.Term, l.Via
	}
	if a.pool != nil {
		s.GossipAlive = a.pool.NumAlive()
	}
	return s
}

// Handler serves GET /healthz and GET /status. role names the serving component in /status.
func (a *Agent) Handler(role string) http.Handler {
	mux := http.NewServeMux()
	a.Routes(mux, role)
	return mux
}

// Routes adds GET /healthz and GET /status to mux.
func (a *Agent) Routes(mux *http.ServeMux, role string) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "id": a.cfg.ID})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		s := a.Status()
		s.Role = role
		writeJSON(w, http.StatusOK, s)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
