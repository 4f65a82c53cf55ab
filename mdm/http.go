package mdm

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"pflex/fsm"
	"pflex/internal/api"
	"pflex/internal/layout"
)

// Store is what the HTTP layer needs from the replica; *Node implements it.
type Store interface {
	IsLeader() bool
	Leader() (id, apiAddr string)
	Propose(ctx context.Context, requestID string, c fsm.Command) (any, error)
	ReadBarrier(ctx context.Context) error
	Read(fn func(r *fsm.Reader) error) error
	AppliedIndex() uint64
	Status() api.ClusterStatus
	Peers() []api.Peer
	Members() ([]api.Member, error)
	Heartbeat(req api.HeartbeatRequest) (api.HeartbeatResponse, error)
	IssueToken(ctx context.Context, req api.TokenRequest) (api.TokenResponse, error)
	RotateTokenKey(ctx context.Context) (uint32, error)
	IOState() (*api.IOState, error)
	Ledger(f fsm.LedgerFilter) (api.Ledger, error)
	VolumeLayout(ctx context.Context, volumeID int64) (layout.Layout, error)
	Join(ctx context.Context, req api.JoinRequest) error
	Remove(ctx context.Context, id string) error
	TransferLeadership(id string) error
	SnapshotTo(path string) error
	RebuildReport(rep api.RebuildReport) error
	RebuildStatus(poolID int64) (api.RebuildStatus, error)
	RebuildProgress(poolID, remaining int64) *RebuildProgress
	RebuildCounters() (chunks, bytes map[int64]int64)
	KickRebuild()
}

// Read and SnapshotTo expose the state database; AppliedIndex is raft's.
func (n *Node) Read(fn func(r *fsm.Reader) error) error { return n.store.Read(fn) }
func (n *Node) SnapshotTo(path string) error            { return n.store.SnapshotTo(path) }
func (n *Node) AppliedIndex() uint64                    { return n.raft.AppliedIndex() }

const (
	maxJSONBody    = 1 << 20
	maxRestoreBody = 64 << 20
	requestTimeout = 10 * time.Second
)

// httpAPI serves the admin API of one MDM.
type httpAPI struct {
	store     Store
	token     string
	key       string // cluster key: what components present
	transport http.RoundTripper
	metrics   *httpMetrics
}

func newHandler(store Store, adminToken, clusterKey string) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	a := &httpAPI{
		store: store,
		token: adminToken,
		key:   clusterKey,
		transport: &http.Transport{
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
		},
		metrics: newHTTPMetrics(),
	}
	e := gin.New()
	e.Use(gin.Recovery(), a.metrics.middleware, a.headers, a.auth)
	e.NoRoute(func(c *gin.Context) {
		fail(c, http.StatusNotFound, string(fsm.KindNotFound), fmt.Sprintf("no route %s %s", c.Request.Method, c.Request.URL.Path))
	})
	e.HandleMethodNotAllowed = true
	e.NoMethod(func(c *gin.Context) {
		fail(c, http.StatusMethodNotAllowed, api.CodeBadRequest, fmt.Sprintf("method %s is not allowed on %s", c.Request.Method, c.Request.URL.Path))
	})
	a.routes(e)
	return e
}

// headers stamps every answer with the leader's address.
func (a *httpAPI) headers(c *gin.Context) {
	_, addr := a.store.Leader()
	c.Header(api.HeaderLeader, addr)
	c.Next()
}

// componentRoutes are what SDS, SDC and MGMT call with the cluster key; everything else is the
// admin API and wants the admin token.
var componentRoutes = map[string]bool{
	"/discovery/register": true,
	"/heartbeat":          true,
	"/discovery/nodes":    true,
	"/cluster/status":     true,
	"/token/issue":        true,
	"/token/ack":          true,
	"/rebuild/report":     true,
}

// isComponentRoute also admits the per-volume layout, which SDCs and SDSs fetch.
func isComponentRoute(path string) bool {
	return componentRoutes[path] || (strings.HasPrefix(path, "/vol/") && strings.HasSuffix(path, "/layout")) ||
		(strings.HasPrefix(path, "/sdc/") && strings.HasSuffix(path, "/volumes"))
}

func (a *httpAPI) auth(c *gin.Context) {
	path := c.Request.URL.Path
	switch path {
	case "/healthz", "/readyz", "/metrics":
		return
	}
	got := []byte(strings.TrimPrefix(c.GetHeader("Authorization"), "Bearer "))
	ok := a.token == "" || subtle.ConstantTimeCompare(got, []byte(a.token)) == 1
	component := isComponentRoute(path)
	if component {
		if a.key != "" {
			ok = subtle.ConstantTimeCompare(got, []byte(a.key)) == 1 ||
				(a.token != "" && subtle.ConstantTimeCompare(got, []byte(a.token)) == 1)
		} else {
			ok = true // no cluster key configured: components are trusted, as on a lab network
			if a.token != "" && len(got) > 0 {
				ok = subtle.ConstantTimeCompare(got, []byte(a.token)) == 1
			}
		}
	}
	if !ok {
		c.Header("WWW-Authenticate", `Bearer realm="pflex"`)
		msg := "missing or wrong admin token (Authorization: Bearer <admin_token>)"
		if component {
			msg = "missing or wrong cluster key (Authorization: Bearer <cluster_key>)"
		}
		fail(c, http.StatusUnauthorized, api.CodeUnauthorized, msg)
		c.Abort()
	}
}

func fail(c *gin.Context, status int, code, msg string) {
	if status == http.StatusServiceUnavailable {
		c.Header("Retry-After", "1")
	}
	c.AbortWithStatusJSON(status, api.Error{Error: msg, Code: code})
}

// failErr maps an error to its status: fsm rejections by kind, raft trouble as 503.
func failErr(c *gin.Context, err error) {
	if e, ok := fsm.AsError(err); ok {
		status := map[fsm.Kind]int{
			fsm.KindInvalid:      http.StatusBadRequest,
			fsm.KindNotFound:     http.StatusNotFound,
			fsm.KindConflict:     http.StatusConflict,
			fsm.KindPrecondition: http.StatusPreconditionFailed,
		}[e.Kind]
		if status == 0 {
			status = http.StatusBadRequest
		}
		fail(c, status, string(e.Kind), e.Message)
		return
	}
	switch {
	case errors.Is(err, ErrForbidden):
		fail(c, http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader), errors.Is(err, ErrShutdown):
		fail(c, http.StatusServiceUnavailable, api.CodeNoLeader, err.Error())
	case errors.Is(err, ErrOutcomeUnknown):
		fail(c, http.StatusServiceUnavailable, api.CodeUnknown, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		fail(c, http.StatusServiceUnavailable, api.CodeTimeout, err.Error())
	default:
		fail(c, http.StatusInternalServerError, api.CodeInternal, err.Error())
	}
}

func (a *httpAPI) respond(c *gin.Context, v any) {
	c.Header(api.HeaderIndex, strconv.FormatUint(a.store.AppliedIndex(), 10))
	c.JSON(http.StatusOK, v)
}

// forward sends the request to the leader, once: a forwarded request that lands on a node that
// is not the leader (leadership moved) gets a 503 the client retries.
func (a *httpAPI) forward(c *gin.Context) {
	id, addr := a.store.Leader()
	if addr == "" {
		fail(c, http.StatusServiceUnavailable, api.CodeNoLeader, "no MDM leader is elected; retry shortly")
		return
	}
	if c.GetHeader(api.HeaderForwarded) != "" {
		fail(c, http.StatusServiceUnavailable, api.CodeNoLeader, "leadership is moving; retry shortly")
		return
	}
	c.Writer.Header().Del(api.HeaderLeader)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: addr})
			pr.Out.Host = addr
			pr.Out.Header.Set(api.HeaderForwarded, "1")
		},
		Transport: a.transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.Header().Set(api.HeaderLeader, addr)
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(api.Error{Error: fmt.Sprintf("leader %s at %s is unreachable: %v", id, addr, err), Code: api.CodeNoLeader})
		},
	}
	proxy.ServeHTTP(c.Writer, c.Request)
	c.Abort()
}

// write wraps a handler that builds a command: followers forward, the leader proposes it.
func (a *httpAPI) write(build func(c *gin.Context) (fsm.Command, error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !a.store.IsLeader() {
			a.forward(c)
			return
		}
		cmd, err := build(c)
		if err != nil {
			failErr(c, err)
			return
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), requestTimeout)
		defer cancel()
		v, err := a.store.Propose(ctx, c.GetHeader(api.HeaderRequestID), cmd)
		if err != nil {
			failErr(c, err)
			return
		}
		a.respond(c, v)
	}
}

// read wraps a query: linearizable on the leader by default, local with ?stale=1.
func (a *httpAPI) read(query func(c *gin.Context, r *fsm.Reader) (any, error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !a.barrier(c) {
			return
		}
		var v any
		err := a.store.Read(func(r *fsm.Reader) error {
			var err error
			v, err = query(c, r)
			return err
		})
		if err != nil {
			failErr(c, err)
			return
		}
		a.respond(c, v)
	}
}

// barrier prepares a read: true when the handler may read local state now.
func (a *httpAPI) barrier(c *gin.Context) bool {
	if stale(c) {
		return true
	}
	if !a.store.IsLeader() {
		a.forward(c)
		return false
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), requestTimeout)
	defer cancel()
	if err := a.store.ReadBarrier(ctx); err != nil {
		failErr(c, err)
		return false
	}
	return true
}

func stale(c *gin.Context) bool {
	v := c.Query("stale")
	return v == "1" || v == "true"
}

// bind decodes a JSON body strictly: unknown fields are named in a 400.
func bind(c *gin.Context, dst any) error {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxJSONBody))
	if err != nil {
		return &fsm.Error{Kind: fsm.KindInvalid, Message: "request body: " + err.Error()}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return &fsm.Error{Kind: fsm.KindInvalid, Message: "request body is not valid JSON for this route: " + strings.TrimPrefix(err.Error(), "json: ")}
	}
	return nil
}

// bindBody is bind that requires a body.
func bindBody(c *gin.Context, dst any) error {
	if c.Request.ContentLength == 0 {
		return &fsm.Error{Kind: fsm.KindInvalid, Message: "a JSON request body is required"}
	}
	return bind(c, dst)
}

// pathID parses a positive integer path parameter.
func pathID(c *gin.Context, name string) (int64, error) {
	return parseID(name, c.Param(name))
}

func parseID(name, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, &fsm.Error{Kind: fsm.KindInvalid, Message: fmt.Sprintf("%s %q must be a positive integer id", name, s)}
	}
	return id, nil
}

// queryInt fills *dst from a query parameter when present.
// queryIntPtr is queryInt for an optional field: a given parameter sets *dst.
func queryIntPtr(c *gin.Context, name string, dst **int64) error {
	if _, ok := c.GetQuery(name); !ok {
		return nil
	}
	var v int64
	if err := queryInt(c, name, &v); err != nil {
		return err
	}
	*dst = &v
	return nil
}

func queryInt(c *gin.Context, name string, dst *int64) error {
	s, ok := c.GetQuery(name)
	if !ok {
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return &fsm.Error{Kind: fsm.KindInvalid, Message: fmt.Sprintf("query parameter %s %q is not an integer", name, s)}
	}
	*dst = v
	return nil
}
