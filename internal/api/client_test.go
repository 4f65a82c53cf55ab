package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func hostOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// deadAddr returns an address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestNormalizeEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8001":         "http://127.0.0.1:8001",
		"http://h:1/":            "http://h:1",
		" https://mdm-1:8443 ":   "https://mdm-1:8443",
		"http://10.0.0.1:80/api": "http://10.0.0.1:80/api",
	} {
		got, err := NormalizeEndpoint(in)
		if err != nil || got != want {
			t.Errorf("NormalizeEndpoint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := NormalizeEndpoint("ftp://x:1"); err == nil {
		t.Error("ftp scheme accepted")
	}
	if _, err := NewClient(nil); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("NewClient(nil) err = %v", err)
	}
}

func TestFollowsLeader(t *testing.T) {
	var leaderHits, followerHits atomic.Int32
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaderHits.Add(1)
		w.Header().Set(HeaderLeader, r.Host)
		w.Header().Set(HeaderIndex, "42")
		writeJSON(w, 200, map[string]string{"who": "leader"})
	}))
	defer leader.Close()
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followerHits.Add(1)
		w.Header().Set(HeaderLeader, hostOf(leader))
		w.Header().Set(HeaderIndex, "41")
		writeJSON(w, 200, map[string]string{"who": "follower"})
	}))
	defer follower.Close()

	c, err := NewClient([]string{hostOf(follower)})
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	if err := c.Get(context.Background(), "/pd/list", nil, &out); err != nil {
		t.Fatal(err)
	}
	if out["who"] != "follower" || c.Index() != 41 {
		t.Fatalf("first answer %v index %d", out, c.Index())
	}
	if c.LastLeader() != hostOf(leader) {
		t.Fatalf("LastLeader = %q, want %q", c.LastLeader(), hostOf(leader))
	}
	for range 3 {
		if err := c.Get(context.Background(), "/pd/list", nil, &out); err != nil {
			t.Fatal(err)
		}
	}
	if out["who"] != "leader" || leaderHits.Load() != 3 || followerHits.Load() != 1 {
		t.Fatalf("leader hits %d follower hits %d", leaderHits.Load(), followerHits.Load())
	}
	if c.Index() != 42 {
		t.Fatalf("Index = %d", c.Index())
	}
}

func TestRetries503WithSameRequestID(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ids = append(ids, r.Header.Get(HeaderRequestID))
		n := len(ids)
		auth = r.Header.Get("Authorization")
		mu.Unlock()
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		if in["name"] != "pd1" {
			writeJSON(w, 400, Error{Error: "body lost on retry", Code: CodeBadRequest})
			return
		}
		if n < 3 {
			w.Header().Set("Retry-After", "0")
			writeJSON(w, 503, Error{Error: "no leader", Code: CodeNoLeader})
			return
		}
		writeJSON(w, 200, map[string]any{"id": 7, "name": "pd1"})
	}))
	defer srv.Close()

	c, _ := NewClient([]string{srv.URL}, WithToken("s3cret"), WithRetryDeadline(2*time.Second))
	var out struct{ ID int64 }
	if err := c.Post(context.Background(), "/pd/create", map[string]string{"name": "pd1"}, &out); err != nil {
		t.Fatal(err)
	}
	if out.ID != 7 {
		t.Fatalf("out = %+v", out)
	}
	if len(ids) != 3 || len(ids[0]) != 32 || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("request ids %q: want three equal 32-hex ids", ids)
	}
	if auth != "Bearer s3cret" {
		t.Fatalf("Authorization = %q", auth)
	}
	// A new logical call gets a new id.
	if err := c.Post(context.Background(), "/pd/create", map[string]string{"name": "pd1"}, nil); err != nil {
		t.Fatal(err)
	}
	if ids[3] == ids[0] {
		t.Fatal("second call reused the first call's request id")
	}
}

func TestConnectionRefusedFailsOver(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderRequestID) != "" {
			t.Error("GET carries a request id")
		}
		writeJSON(w, 200, []int{1, 2})
	}))
	defer srv.Close()
	c, _ := NewClient([]string{deadAddr(t), srv.URL}, WithRetryDeadline(time.Second))
	start := time.Now()
	var out []int
	if err := c.Get(context.Background(), "/vol/list", nil, &out); err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("out = %v", out)
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Fatalf("failover took %s", d)
	}
}

func TestTimeoutFailsOver(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer hang.Close()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, "fine")
	}))
	defer ok.Close()
	c, _ := NewClient([]string{hang.URL, ok.URL}, WithRequestTimeout(50*time.Millisecond), WithRetryDeadline(time.Second))
	var out string
	if err := c.Get(context.Background(), "/x", nil, &out); err != nil || out != "fine" {
		t.Fatalf("out %q err %v", out, err)
	}
}

func TestClientErrorIsNotRetried(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		writeJSON(w, 409, Error{Error: `volume "vol1" already exists`, Code: "conflict"})
	}))
	defer srv.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(100)
	}))
	defer other.Close()
	c, _ := NewClient([]string{srv.URL, other.URL})
	err := c.Post(context.Background(), "/vol/create", map[string]any{"name": "vol1"}, nil)
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v (%T), want *APIError", err, err)
	}
	if apiErr.Status != 409 || apiErr.Code != "conflict" || hits.Load() != 1 {
		t.Fatalf("apiErr %+v hits %d", apiErr, hits.Load())
	}
	if got, want := err.Error(), `409 conflict: volume "vol1" already exists`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	// A body that is not the JSON error shape still reads well.
	plain := &APIError{Status: 404}
	if plain.Error() != "404 not found" {
		t.Fatalf("plain = %q", plain.Error())
	}
}

func TestRetryDeadlineRespected(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set(HeaderLeader, "")
		writeJSON(w, 503, Error{Error: "no leader", Code: CodeNoLeader})
	}))
	defer srv.Close()
	c, _ := NewClient([]string{srv.URL, deadAddr(t)}, WithRetryDeadline(200*time.Millisecond))
	start := time.Now()
	err := c.Get(context.Background(), "/pd/list", nil, nil)
	elapsed := time.Since(start)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if elapsed > 700*time.Millisecond {
		t.Fatalf("gave up after %s, deadline was 200ms", elapsed)
	}
	if hits.Load() < 2 {
		t.Fatalf("only %d attempts on the live MDM", hits.Load())
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != CodeNoLeader {
		t.Fatalf("last error not kept: %v", err)
	}

	// The caller's context wins over the retry deadline.
	c2, _ := NewClient([]string{srv.URL}, WithRetryDeadline(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := c2.Get(ctx, "/pd/list", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 600*time.Millisecond {
		t.Fatal("ctx deadline ignored")
	}
}

func TestDoRawUpload(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		if r.URL.Query().Get("fail") != "" {
			writeJSON(w, 503, Error{Error: "no leader", Code: CodeNoLeader})
			return
		}
		w.Header().Set(HeaderIndex, "9")
		writeJSON(w, 200, RestoreResponse{Restored: true, AppliedIndex: uint64(len(b))})
	}))
	defer srv.Close()
	c, _ := NewClient([]string{deadAddr(t), srv.URL}, WithRetryDeadline(time.Second))
	resp, err := c.DoRaw(context.Background(), http.MethodPost, "/cluster/restore", nil,
		strings.NewReader("0123456789"), "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	var rr RestoreResponse
	_ = json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if rr.AppliedIndex != 10 || c.Index() != 9 {
		t.Fatalf("server saw %d bytes (want 10), index %d", rr.AppliedIndex, c.Index())
	}
	// Once the body was sent, a 503 is not retried: the stream is gone.
	hits.Store(0)
	_, err = c.DoRaw(context.Background(), http.MethodPost, "/cluster/restore", map[string][]string{"fail": {"1"}},
		strings.NewReader("abc"), "application/octet-stream")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 503 || hits.Load() != 1 {
		t.Fatalf("err %v hits %d", err, hits.Load())
	}
}

func TestDoRawDownloadOutlivesRequestTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte("part1"))
		w.(http.Flusher).Flush()
		time.Sleep(80 * time.Millisecond)
		w.Write([]byte("part2"))
	}))
	defer srv.Close()
	c, _ := NewClient([]string{srv.URL}, WithRequestTimeout(40*time.Millisecond))
	resp, err := c.DoRaw(context.Background(), http.MethodGet, "/cluster/snapshot", nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "part1part2" {
		t.Fatalf("body %q err %v", b, err)
	}
}
