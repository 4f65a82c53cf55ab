package sdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"pflex/internal/api"
	"pflex/internal/layout"
	"pflex/internal/leader"
)

// MDM is what the SDC asks the MDM leader: tokens, layouts and its mapped volumes. The IO engine
// and the exporter depend on this interface only (tests may replace it).
type MDM interface {
	// IssueToken asks for an IO token. An *api.APIError with status 403 or 404 means the volume
	// is not (or no longer) mapped to this SDC.
	IssueToken(ctx context.Context, req api.TokenRequest) (api.TokenResponse, error)
	// Layout is the volume's current layout.
	Layout(ctx context.Context, volumeID int64) (layout.Layout, error)
	// Volumes are the volumes mapped to SDC sdcID.
	Volumes(ctx context.Context, sdcID int64) ([]api.MappedVolume, error)
}

// leaderSource is the part of *leader.Tracker the MDM client uses.
type leaderSource interface {
	Wait(ctx context.Context) (leader.Leader, error)
	Report(id, apiAddr string)
	Failed(apiAddr string)
}

// mdmClient sends each request to the leader the tracker names (any MDM would forward it, but
// the leader saves a hop), reports X-Pflex-Leader back to the tracker, and retries a request
// that met a dead or leaderless MDM until ctx ends.
type mdmClient struct {
	leaders    leaderSource
	clusterKey string
	http       *http.Client
	timeout    time.Duration // one attempt
}

func newMDMClient(leaders leaderSource, clusterKey string) *mdmClient {
	return &mdmClient{leaders: leaders, clusterKey: clusterKey, http: &http.Client{}, timeout: 5 * time.Second}
}

// MDM routes the SDC calls.
const (
	pathTokenIssue = "/token/issue"
)

func pathLayout(volumeID int64) string { return "/vol/" + strconv.FormatInt(volumeID, 10) + "/layout" }
func pathVolumes(sdcID int64) string   { return "/sdc/" + strconv.FormatInt(sdcID, 10) + "/volumes" }

// IssueToken implements MDM.
func (c *mdmClient) IssueToken(ctx context.Context, req api.TokenRequest) (api.TokenResponse, error) {
	var out api.TokenResponse
	err := c.do(ctx, http.MethodPost, pathTokenIssue, req, &out)
	return out, err
}

// Layout implements MDM.
func (c *mdmClient) Layout(ctx context.Context, volumeID int64) (layout.Layout, error) {
	var out layout.Layout
	err := c.do(ctx, http.MethodGet, pathLayout(volumeID), nil, &out)
	return out, err
}

// Volumes implements MDM.
func (c *mdmClient) Volumes(ctx context.Context, sdcID int64) ([]api.MappedVolume, error) {
	var out []api.MappedVolume
	err := c.do(ctx, http.MethodGet, pathVolumes(sdcID), nil, &out)
	return out, err
}

// do runs one logical call: attempts against the current leader until one gets an answer the
// MDM means (2xx, or an error other than 502/503/504), backing off between failed attempts.
func (c *mdmClient) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("encode %s: %w", path, err)
		}
	}
	backoff := 20 * time.Millisecond
	for {
		ld, err := c.leaders.Wait(ctx)
		if err != nil {
			return fmt.Errorf("%s %s: no MDM leader: %w", method, path, err)
		}
		err, retry := c.attempt(ctx, ld.API, method, path, payload, out)
		if !retry {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// attempt sends one request to addr. retry is true when another attempt may succeed.
func (c *mdmClient) attempt(ctx context.Context, addr, method, path string, payload []byte, out any) (err error, retry bool) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, method, "http://"+addr+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err), false
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.clusterKey)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			c.leaders.Failed(addr)
		}
		return fmt.Errorf("%s %s at %s: %w", method, path, addr, err), true
	}
	defer resp.Body.Close()
	hdr := strings.TrimSpace(resp.Header.Get(api.HeaderLeader))
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s at %s: reading the answer: %w", method, path, addr, err), true
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		c.leaders.Report("", hdr)
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s at %s: decode: %w", method, path, addr, err), false
		}
		return nil, false
	}
	e := &api.APIError{Status: resp.StatusCode}
	var eb api.Error
	if json.Unmarshal(data, &eb) == nil && (eb.Error != "" || eb.Code != "") {
		e.Code, e.Message = eb.Code, eb.Error
	} else {
		e.Message = strings.TrimSpace(string(data))
	}
	err = fmt.Errorf("%s %s at %s: %w", method, path, addr, e)
	switch resp.StatusCode {
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		if hdr != "" && hdr != addr {
			c.leaders.Report("", hdr)
		} else if hdr == "" {
			c.leaders.Failed(addr)
		}
		return err, true
	}
	c.leaders.Report("", hdr)
	return err, false
}

// notMapped reports whether err is the MDM saying the volume is not mapped to this SDC (403), or
// does not exist (404).
func notMapped(err error) bool {
	var e *api.APIError
	return errors.As(err, &e) && (e.Status == http.StatusForbidden || e.Status == http.StatusNotFound)
}
