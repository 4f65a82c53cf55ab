package jepsen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"time"

	"pflex/internal/api"
)

// opClient sends exactly one HTTP request per operation to the MDM it is given: no retries,
// no leader following, so the history shows what each request did.
type opClient struct {
	http    *http.Client
	token   string
	timeout time.Duration
}

func newOpClient(token string, timeout time.Duration) *opClient {
	return &opClient{token: token, timeout: timeout,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 5 * time.Second}}}
}

// reply is one request's result: err is a transport error (no status).
type reply struct {
	status int
	body   []byte
	code   string // api.Error code of an error response
	err    error
}

func (r reply) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	if r.status == http.StatusOK {
		return "200"
	}
	return fmt.Sprintf("%d %s", r.status, strings.TrimSpace(string(r.body)))
}

func (c *opClient) do(ctx context.Context, node Node, method, path string, body any) reply {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+node.API+path, rd)
	if err != nil {
		return reply{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{status: resp.StatusCode, err: err}
	}
	r := reply{status: resp.StatusCode, body: data}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if json.Unmarshal(data, &e) == nil {
			r.code = e.Code
		}
	}
	return r
}

// writeOutcome classifies the reply to a request that changes state. Only answers that prove
// nothing was proposed are failures:
//   - a refused connection: the request never reached an MDM;
//   - the FSM's deterministic rejections (400, 404, 409, 412);
//   - the two 503s a follower answers before proposing or forwarding anything: "no MDM leader is
//     elected" (it knows no leader) and "leader ... is unreachable: dial ...: connection refused"
//     (its forward could not connect, so no byte reached the leader).
//
// Everything else is unknown: timeouts, lost connections, outcome_unknown, and any other 503
// (a no_leader from a leader whose proposal raced a leadership change, a forward that broke
// after it was sent).
func writeOutcome(r reply) Outcome {
	if r.err != nil {
		if errors.Is(r.err, syscall.ECONNREFUSED) {
			return Fail
		}
		return Unknown
	}
	switch r.status {
	case http.StatusOK:
		return OK
	case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed, http.StatusUnauthorized:
		return Fail
	case http.StatusServiceUnavailable:
		if r.code == api.CodeNoLeader && notForwarded(string(r.body)) {
			return Fail
		}
	}
	return Unknown
}

// notForwarded recognizes the follower's own no_leader answers (mdm/http.go forward) that
// come before any proposal or forward.
func notForwarded(body string) bool {
	return strings.Contains(body, "no MDM leader is elected") ||
		(strings.Contains(body, "is unreachable: dial tcp") && strings.Contains(body, "connection refused"))
}

// readOutcome classifies a read's reply: a read changes nothing, so anything but an answer is a
// failure the checker can ignore (a transport error is still noted as unknown).
func readOutcome(r reply) Outcome {
	switch {
	case r.err != nil && !errors.Is(r.err, syscall.ECONNREFUSED):
		return Unknown
	case r.status == http.StatusOK:
		return OK
	}
	return Fail
}
