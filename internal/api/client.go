package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Client defaults.
const (
	DefaultRetryDeadline  = 30 * time.Second
	DefaultRequestTimeout = 10 * time.Second

	backoffStart = 50 * time.Millisecond
	backoffCap   = 500 * time.Millisecond
	maxErrorBody = 64 << 10
)

// Sentinel errors of the client.
var (
	ErrNoEndpoints = errors.New("api: no MDM endpoints configured")
	// ErrUnavailable wraps the last failure when no MDM answered before the retry deadline.
	ErrUnavailable = errors.New("no MDM answered")
)

// APIError is a non-2xx answer of the admin API that retrying would not change.
type APIError struct {
	Status  int    // HTTP status
	Code    string // machine code from the body ("conflict", "not_found", ...)
	Message string // human message from the body
}

// Error reads in plain words: `409 conflict: volume "vol1" already exists`.
func (e *APIError) Error() string {
	what := strings.ReplaceAll(e.Code, "_", " ")
	if what == "" {
		what = strings.ToLower(http.StatusText(e.Status))
	}
	if e.Message == "" {
		return fmt.Sprintf("%d %s", e.Status, what)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, what, e.Message)
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends `Authorization: Bearer <token>` on every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithRetryDeadline bounds how long one logical call keeps retrying through failover.
// A deadline <= 0 makes exactly one attempt.
func WithRetryDeadline(d time.Duration) Option { return func(c *Client) { c.retryDeadline = d } }

// WithRequestTimeout bounds one attempt (for DoRaw: until the response headers arrive).
func WithRequestTimeout(d time.Duration) Option { return func(c *Client) { c.requestTimeout = d } }

// WithHTTPClient replaces the underlying *http.Client (its Timeout should be zero: the Client
// sets its own per-attempt deadline, and a streaming body must not be cut by a global timeout).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithoutLeaderFollowing keeps every request on the configured endpoints, ignoring
// X-Pflex-Leader. Used to ask one particular replica for its own view.
func WithoutLeaderFollowing() Option { return func(c *Client) { c.noFollow = true } }

// Client talks to the MDM admin API. It sends each request to the leader it last heard of
// (X-Pflex-Leader), falls over to the other endpoints on connection errors, timeouts and 503,
// and makes writes idempotent with one request id per logical call. Safe for concurrent use.
type Client struct {
	endpoints      []string // normalized base URLs, "http://host:port"
	token          string
	retryDeadline  time.Duration
	requestTimeout time.Duration
	http           *http.Client
	noFollow       bool

	mu        sync.Mutex
	leader    string // base URL of the leader last announced, "" if unknown
	preferred int    // index in endpoints of the last endpoint that answered
	index     uint64 // last X-Pflex-Index seen
}

// NewClient returns a client for the MDM API at endpoints ("127.0.0.1:8001" or
// "http://host:port").
func NewClient(endpoints []string, opts ...Option) (*Client, error) {
	c := &Client{
		retryDeadline:  DefaultRetryDeadline,
		requestTimeout: DefaultRequestTimeout,
		http:           &http.Client{},
	}
	for _, e := range endpoints {
		if strings.TrimSpace(e) == "" {
			continue
		}
		n, err := NormalizeEndpoint(e)
		if err != nil {
			return nil, err
		}
		c.endpoints = append(c.endpoints, n)
	}
	if len(c.endpoints) == 0 {
		return nil, ErrNoEndpoints
	}
	for _, o := range opts {
		o(c)
	}
	if c.requestTimeout <= 0 {
		c.requestTimeout = DefaultRequestTimeout
	}
	return c, nil
}

// NormalizeEndpoint turns "host:port" or "http://host:port/" into "http://host:port".
func NormalizeEndpoint(e string) (string, error) {
	e = strings.TrimSpace(e)
	if !strings.Contains(e, "://") {
		e = "http://" + e
	}
	u, err := url.Parse(e)
	if err != nil {
		return "", fmt.Errorf("api: bad MDM address %q: %w", e, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("api: bad MDM address %q: scheme must be http or https", e)
	}
	if u.Host == "" {
		return "", fmt.Errorf("api: bad MDM address %q: no host", e)
	}
	return u.Scheme + "://" + u.Host + strings.TrimRight(u.Path, "/"), nil
}

// Endpoints returns the configured endpoints, normalized.
func (c *Client) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// LastLeader returns the leader API address (host:port) last announced by an MDM, or "".
func (c *Client) LastLeader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return hostPort(c.leader)
}

// Index returns the last X-Pflex-Index (applied index of the answering replica) seen.
func (c *Client) Index() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.index
}

// Get, Post, Put and Delete are Do with the method filled in.
func (c *Client) Get(ctx context.Context, path string, query url.Values, out any) error {
	return c.Do(ctx, http.MethodGet, path, query, nil, out)
}

func (c *Client) Post(ctx context.Context, path string, body, out any) error {
	return c.Do(ctx, http.MethodPost, path, nil, body, out)
}

func (c *Client) Put(ctx context.Context, path string, body, out any) error {
	return c.Do(ctx, http.MethodPut, path, nil, body, out)
}

func (c *Client) Delete(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodDelete, path, nil, nil, out)
}

// Do sends one logical request: body (if not nil) is encoded as JSON, a 2xx answer is decoded
// into out (if not nil; a *json.RawMessage receives the raw bytes). Any other answer is an
// *APIError, possibly wrapped in ErrUnavailable when it was a retriable one.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("api: encode %s %s: %w", method, path, err)
		}
		payload = b
	}
	resp, cancel, err := c.send(ctx, method, path, query, false, func() (io.Reader, string, bool) {
		if payload == nil {
			return nil, "", true
		}
		return bytes.NewReader(payload), "application/json", true
	})
	if err != nil {
		return err
	}
	defer cancel()
	data, _ := io.ReadAll(resp.Body) // already in memory
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("api: decode %s %s: %w", method, path, err)
	}
	return nil
}

// DoRaw sends a request with a streaming body (may be nil) and returns the 2xx response with
// its body unread; the caller closes it. The per-request timeout covers only the wait for the
// response headers. A request with a body is retried only when the connection was refused
// before any byte of it was read; without a body it is retried like Do.
func (c *Client) DoRaw(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string) (*http.Response, error) {
	var counted *countingReader
	if body != nil {
		counted = &countingReader{r: body}
	}
	resp, cancel, err := c.send(ctx, method, path, query, true, func() (io.Reader, string, bool) {
		if counted == nil {
			return nil, "", true
		}
		return counted, contentType, false
	})
	if err != nil {
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// bodyFunc yields the body of the next attempt, its content type, and whether the request
// may be retried after it was (possibly) sent. A non-retriable body is still retried when the
// connection was refused before any of it was read.
type bodyFunc func() (r io.Reader, contentType string, retriable bool)

// send runs the retry loop and returns a 2xx response. cancel releases the attempt's
// context and must be called once the body is consumed.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, streaming bool, nextBody bodyFunc) (*http.Response, context.CancelFunc, error) {
	var requestID string
	if method != http.MethodGet && method != http.MethodHead {
		requestID = newRequestID()
	}
	start := time.Now()
	deadline := start.Add(c.retryDeadline)
	backoff := backoffStart
	tried := map[string]bool{}
	var lastErr error
	for attempt := 1; ; attempt++ {
		target := c.pick(tried)
		body, ctype, retriable := nextBody()
		resp, cancel, err := c.attempt(ctx, target, method, path, query, requestID, body, ctype, deadline, streaming)
		if err == nil {
			c.noteSuccess(target)
			return resp, cancel, nil
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("api: %s %s: %w", method, path, ctx.Err())
		}
		var apiErr *APIError
		isAPI := errors.As(err, &apiErr)
		if isAPI && !retriableStatus(apiErr.Status) {
			return nil, nil, err
		}
		c.noteFailure(target)
		lastErr = err
		if !retriable && !(errors.Is(err, syscall.ECONNREFUSED) && !consumed(body)) {
			return nil, nil, err
		}
		// Sleep before retrying unless a connection-level failure can fail over at once to
		// an endpoint not tried in this round.
		sleep := time.Duration(0)
		if isAPI {
			sleep = backoff
			if ra := retryAfter(err); ra > 0 {
				sleep = min(ra, backoffCap)
			}
		} else if c.roundDone(tried) {
			sleep = backoff
		}
		if c.retryDeadline <= 0 {
			return nil, nil, fmt.Errorf("%w: %w", ErrUnavailable, lastErr)
		}
		if time.Now().Add(sleep).After(deadline) {
			return nil, nil, fmt.Errorf("%w within %s (%d attempts); last error: %w",
				ErrUnavailable, c.retryDeadline, attempt, lastErr)
		}
		if sleep > 0 {
			backoff = min(backoff*2, backoffCap)
			t := time.NewTimer(sleep)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, nil, fmt.Errorf("api: %s %s: %w", method, path, ctx.Err())
			case <-t.C:
			}
		}
	}
}

// attempt sends one HTTP request to target. A non-2xx answer becomes an *APIError carrying
// the Retry-After hint.
func (c *Client) attempt(ctx context.Context, target, method, path string, query url.Values,
	requestID string, body io.Reader, ctype string, deadline time.Time, streaming bool) (*http.Response, context.CancelFunc, error) {
	timeout := c.requestTimeout
	if c.retryDeadline > 0 {
		if left := time.Until(deadline); left < timeout {
			timeout = max(left, time.Millisecond)
		}
	}
	// The timer, not a context deadline, bounds the attempt, so that a stream can outlive it
	// once the headers are in.
	actx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(timeout, func() { cancel(errAttemptTimeout) })
	release := func() { timer.Stop(); cancel(nil) }
	fail := func(err error) error {
		release()
		if errors.Is(context.Cause(actx), errAttemptTimeout) {
			return fmt.Errorf("%s %s at %s: no answer within %s: %w", method, path, hostPort(target), timeout, context.DeadlineExceeded)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s %s at %s: %w", method, path, hostPort(target), err)
	}
	u := target + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(actx, method, u, body)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Body = io.NopCloser(body) // never let the transport close the caller's reader
		req.ContentLength = -1
		if r, ok := body.(*bytes.Reader); ok {
			req.ContentLength = int64(r.Len())
		}
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if requestID != "" {
		req.Header.Set(HeaderRequestID, requestID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fail(err)
	}
	c.noteHeaders(target, resp.Header)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		release()
		return nil, nil, newAPIError(resp, data)
	}
	if streaming {
		// The stream may take as long as it takes, bounded only by the caller's ctx.
		if !timer.Stop() {
			resp.Body.Close()
			return nil, nil, fail(context.DeadlineExceeded)
		}
		return resp, func() { cancel(nil) }, nil
	}
	// A JSON answer is read whole under the attempt's timeout; a body cut short is a failed
	// attempt like any other and is retried.
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, nil, fail(err)
	}
	release()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp, func() {}, nil
}

var errAttemptTimeout = errors.New("attempt timed out")

func hostPort(endpoint string) string {
	if i := strings.Index(endpoint, "://"); i >= 0 {
		return endpoint[i+3:]
	}
	return endpoint
}

type retryAfterError struct {
	*APIError
	after time.Duration
}

func (e *retryAfterError) Unwrap() error { return e.APIError }

func newAPIError(resp *http.Response, data []byte) error {
	e := &APIError{Status: resp.StatusCode}
	var body Error
	if json.Unmarshal(data, &body) == nil && (body.Error != "" || body.Code != "") {
		e.Code, e.Message = body.Code, body.Error
	} else {
		e.Message = strings.TrimSpace(string(data))
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.ParseFloat(s, 64); err == nil && secs > 0 {
			return &retryAfterError{APIError: e, after: time.Duration(secs * float64(time.Second))}
		}
	}
	return e
}

func retryAfter(err error) time.Duration {
	var ra *retryAfterError
	if errors.As(err, &ra) {
		return ra.after
	}
	return 0
}

// retriableStatus: 503 is the MDM's "no leader / outcome unknown, try again"; 502 and 504 come
// from a follower whose forward to a dying leader failed.
func retriableStatus(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusBadGateway ||
		status == http.StatusGatewayTimeout
}

// pick chooses the next target: the leader first, then the endpoints starting from the one
// that answered last, skipping those already tried in this round.
func (c *Client) pick(tried map[string]bool) string {
	cands := c.candidates()
	for _, e := range cands {
		if !tried[e] {
			tried[e] = true
			return e
		}
	}
	clear(tried)
	tried[cands[0]] = true
	return cands[0]
}

// roundDone reports whether every candidate was tried in this round.
func (c *Client) roundDone(tried map[string]bool) bool {
	for _, e := range c.candidates() {
		if !tried[e] {
			return false
		}
	}
	return true
}

func (c *Client) candidates() []string {
	c.mu.Lock()
	leader, start := c.leader, c.preferred
	c.mu.Unlock()
	out := make([]string, 0, len(c.endpoints)+1)
	if leader != "" {
		out = append(out, leader)
	}
	for i := range c.endpoints {
		if e := c.endpoints[(start+i)%len(c.endpoints)]; e != leader {
			out = append(out, e)
		}
	}
	return out
}

func (c *Client) noteHeaders(target string, h http.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := h.Get(HeaderIndex); v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			c.index = n
		}
	}
	if c.noFollow {
		return
	}
	if _, ok := h[http.CanonicalHeaderKey(HeaderLeader)]; !ok {
		return
	}
	leader := strings.TrimSpace(h.Get(HeaderLeader))
	if leader == "" {
		c.leader = ""
		return
	}
	if !strings.Contains(leader, "://") {
		scheme := "http"
		if i := strings.Index(target, "://"); i > 0 {
			scheme = target[:i]
		}
		leader = scheme + "://" + leader
	}
	if n, err := NormalizeEndpoint(leader); err == nil {
		c.leader = n
	}
}

func (c *Client) noteSuccess(target string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.endpoints {
		if e == target {
			c.preferred = i
		}
	}
}

func (c *Client) noteFailure(target string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == target {
		c.leader = ""
	}
	if c.endpoints[c.preferred] == target {
		c.preferred = (c.preferred + 1) % len(c.endpoints)
	}
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func consumed(r io.Reader) bool {
	if c, ok := r.(*countingReader); ok {
		return c.n > 0
	}
	return false
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
