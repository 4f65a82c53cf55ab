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

// The bodies are the shared wire types: fsm.RegisterNode (the registration, committed as is),
// api.RegisterResponse, api.HeartbeatRequest and api.HeartbeatResponse. The MDM decodes bodies
// strictly, so the agent sends exactly those types.

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
	return callMethod(ctx, hc, key, timeout, http.MethodPost, addr, path, "", body, out)
}

// callMethod sends one request to one MDM, once, within timeout: body (nil: none) as JSON, and
// requestID (when not "") as X-Pflex-Request-Id. A 2xx answer is decoded into out.
func callMethod(ctx context.Context, hc *http.Client, key string, timeout time.Duration, method, addr, path, requestID string, body, out any) answer {
	var rd io.Reader
	if body != nil {
		payload, err := json.Marshal(body)
		if err != nil {
			return answer{err: fmt.Errorf("encode %s: %w", path, err)}
		}
		rd = bytes.NewReader(payload)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return answer{err: fmt.Errorf("%s %s at %s: %w", method, path, addr, err)}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	if requestID != "" {
		req.Header.Set(api.HeaderRequestID, requestID)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{err: fmt.Errorf("%s %s at %s: %w", method, path, addr, err)}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, leader: strings.TrimSpace(resp.Header.Get(api.HeaderLeader))}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		a.err = fmt.Errorf("%s %s at %s: reading the answer: %w", method, path, addr, err)
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
			a.err = fmt.Errorf("%s %s at %s: decode: %w", method, path, addr, err)
		}
	}
	return a
}
