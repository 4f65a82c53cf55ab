package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"pflex/internal/api"
)

// MDM routes the agent calls.
const (
	PathRegister  = "/discovery/register"
	PathHeartbeat = "/heartbeat"
)

// RegisterRequest is the body of POST /discovery/register. The MDM decodes it strictly, so it
// carries exactly these fields.
type RegisterRequest struct {
	ID           string   `json:"id"`
	Capabilities []string `json:"capabilities"`
	Version      string   `json:"version"`
	APIAddr      string   `json:"api_addr"`
	MgmtAddr     string   `json:"mgmt_addr"`
	DataAddr     string   `json:"data_addr"`
	NBDAddr      string   `json:"nbd_addr"`
	GossipAddr   string   `json:"gossip_addr"`
	SDS          *SDSInfo `json:"sds,omitempty"`
}

// SDSInfo is what an SDS registers beyond its addresses.
type SDSInfo struct {
	ProtectionDomain string   `json:"protection_domain"`
	FaultSet         string   `json:"fault_set"`
	Devices          []string `json:"devices"`
	TotalCapacityGB  int64    `json:"total_capacity_gb"`
}

// RegisterResponse is the MDM's answer to a registration.
type RegisterResponse struct {
	Node      json.RawMessage `json:"node"`
	SDSID     int64           `json:"sds_id"`
	SDCID     int64           `json:"sdc_id"`
	LeaderID  string          `json:"leader_id"`
	LeaderAPI string          `json:"leader_api"`
}

// HeartbeatRequest is the body of POST /heartbeat.
type HeartbeatRequest struct {
	ID string `json:"id"`
}

// HeartbeatResponse is the MDM's answer to a heartbeat.
type HeartbeatResponse struct {
	LeaderID  string `json:"leader_id"`
	LeaderAPI string `json:"leader_api"`
	Term      uint64 `json:"term"`
	State     string `json:"state"`
}

// answer is what one call to an MDM produced, whatever its outcome.
type answer struct {
	status int    // HTTP status; 0 when no answer arrived
	leader string // X-Pflex-Leader, "" when absent or empty
	err    error  // nil on 2xx; *api.APIError for other statuses; transport error otherwise
}

// apiError returns the *api.APIError of a non-2xx answer, or nil.
func (a answer) apiError() *api.APIError {
	var e *api.APIError
	if errors.As(a.err, &e) {
		return e
	}
	return nil
}

// unavailable: the MDM could not serve it now (no leader, forwarding failed, outcome unknown).
func (a answer) unavailable() bool {
	return a.status == http.StatusServiceUnavailable || a.status == http.StatusBadGateway ||
		a.status == http.StatusGatewayTimeout
}

// call POSTs body as JSON to one MDM, once, within timeout, and decodes a 2xx answer into out.
func call(ctx context.Context, hc *http.Client, key string, timeout time.Duration, addr, path string, body, out any) answer {
	payload, err := json.Marshal(body)
	if err != nil {
		return answer{err: fmt.Errorf("encode %s: %w", path, err)}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(payload))
	if err != nil {
		return answer{err: fmt.Errorf("POST %s at %s: %w", path, addr, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := hc.Do(req)
	if err != nil {
		return answer{err: fmt.Errorf("POST %s at %s: %w", path, addr, err)}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, leader: strings.TrimSpace(resp.Header.Get(api.HeaderLeader))}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		a.err = fmt.Errorf("POST %s at %s: reading the answer: %w", path, addr, err)
		return a
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &api.APIError{Status: resp.StatusCode}
		var eb api.Error
		if json.Unmarshal(data, &eb) == nil && (eb.Error != "" || eb.Code != "") {
			e.Code, e.Message = eb.Code, eb.Error
		} else {
			e.Message = strings.TrimSpace(string(data))
		}
		a.err = e
		return a
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			a.err = fmt.Errorf("POST %s at %s: decode: %w", path, addr, err)
		}
	}
	return a
}
