package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"pflex/fsm"
	"pflex/internal/api"
)

// fakeMDM imitates the MDM admin API closely enough for the CLI: objects are kept as JSON
// maps, names are unique per kind, ids come from one counter.
type fakeMDM struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	objects  map[string][]map[string]any // kind route ("vol") -> objects in creation order
	labels   map[string]fsm.Label        // "volID/key"
	nextID   int64
	index    uint64
	requests []string                   // "METHOD /path?query"
	bodies   map[string]json.RawMessage // "METHOD /path" -> last body
	status   api.ClusterStatus
	snapshot []byte
	restored []byte
	// transferBlank makes transfer-leadership answer before a new leader is known.
	transferBlank bool
	// rebuild is each pool's rebuild status by pool id; health overrides a pool's health answer.
	rebuild map[string]api.RebuildStatus
	health  map[string]string
}

func newFakeMDM(t *testing.T) *fakeMDM {
	f := &fakeMDM{t: t, objects: map[string][]map[string]any{}, labels: map[string]fsm.Label{},
		bodies: map[string]json.RawMessage{}, index: 10, rebuild: map[string]api.RebuildStatus{}, health: map[string]string{}, snapshot: []byte("SQLite format 3\x00fake")}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{kind}/{action}", f.create)
	mux.HandleFunc("GET /{kind}/list", f.list)
	mux.HandleFunc("GET /{kind}/{id}", f.get)
	mux.HandleFunc("DELETE /{kind}/{id}", f.delete)
	mux.HandleFunc("POST /sds/{id}/{action}", f.sdsState)
	mux.HandleFunc("POST /sds/{id}/maintenance/{action}", f.sdsState)
	mux.HandleFunc("GET /pool/{id}/health", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.find("pool", r.PathValue("id")); !ok {
			f.fail(w, 404, "not_found", "pool %s does not exist", r.PathValue("id"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		f.mu.Lock()
		h, ok := f.health[r.PathValue("id")]
		f.mu.Unlock()
		if ok {
			io.WriteString(w, h)
			return
		}
		io.WriteString(w, `{"pool_id":`+r.PathValue("id")+`,"health":"OK","chunks":128,"degraded_chunks":0}`)
	})
	mux.HandleFunc("GET /rebuild/status/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.find("pool", r.PathValue("id")); !ok {
			f.fail(w, 404, "not_found", "storage pool %s not found", r.PathValue("id"))
			return
		}
		f.mu.Lock()
		st, ok := f.rebuild[r.PathValue("id")]
		f.mu.Unlock()
		if !ok {
			id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
			st = api.RebuildStatus{PoolID: id, State: "idle", Health: "OK"}
		}
		f.reply(w, 200, st)
	})
	mux.HandleFunc("POST /rebuild/{action}/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := f.find("pool", r.PathValue("id")); !ok {
			f.fail(w, 404, "not_found", "storage pool %s not found", r.PathValue("id"))
			return
		}
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		switch r.PathValue("action") {
		case "cancel":
			f.reply(w, 200, map[string]any{"pool_id": id, "paused": true, "cut_short": 2})
		case "start":
			f.reply(w, 200, map[string]any{"pool_id": id, "paused": false})
		default:
			f.fail(w, 404, "not_found", "no route %s", r.URL.Path)
		}
	})
	mux.HandleFunc("POST /vol/map", f.mapVol)
	mux.HandleFunc("POST /vol/unmap", f.ok)
	mux.HandleFunc("POST /vol/limits", func(w http.ResponseWriter, r *http.Request) {
		f.reply(w, 200, fsm.Volume{ID: 3, Name: "vol1", Mappings: []fsm.Mapping{{VolumeID: 3, SDCID: 4, IOPSLimit: 250, BandwidthLimitMBps: 0}}})
	})
	mux.HandleFunc("POST /vol/extend", f.ok)
	mux.HandleFunc("PUT /vol/{id}/labels/{key}", f.putLabel)
	mux.HandleFunc("GET /vol/{id}/labels/{key}", f.getLabel)
	mux.HandleFunc("GET /cluster/status", func(w http.ResponseWriter, r *http.Request) {
		f.reply(w, 200, f.status)
	})
	mux.HandleFunc("GET /cluster/peers", func(w http.ResponseWriter, r *http.Request) {
		f.reply(w, 200, f.status.Peers)
	})
	mux.HandleFunc("POST /cluster/join", f.ok)
	mux.HandleFunc("POST /cluster/remove", f.ok)
	mux.HandleFunc("POST /cluster/transfer-leadership", func(w http.ResponseWriter, r *http.Request) {
		if f.transferBlank {
			f.reply(w, 200, api.TransferResponse{})
			return
		}
		f.reply(w, 200, api.TransferResponse{LeaderID: "mdm-2", LeaderAPI: "127.0.0.1:8002"})
	})
	mux.HandleFunc("GET /cluster/snapshot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(f.snapshot)
	})
	mux.HandleFunc("POST /cluster/restore", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.restored = b
		f.reply(w, 200, api.RestoreResponse{Restored: true, AppliedIndex: 77, Digest: "abcdef0123456789abcdef"})
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		if len(body) > 0 && r.Header.Get("Content-Type") == "application/json" {
			f.bodies[r.Method+" "+r.URL.Path] = body
		}
		f.mu.Unlock()
		w.Header().Set(api.HeaderLeader, r.Host)
		w.Header().Set(api.HeaderIndex, strconv.FormatUint(f.index, 10))
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	f.status = api.ClusterStatus{NodeID: "mdm-1", State: "leader", Term: 4, LeaderID: "mdm-1",
		LeaderAPI: f.addr(), CommitIndex: 10, AppliedIndex: 10, FSMIndex: 9, Digest: "d1g3st0000000000ffff",
		Peers: []api.Peer{{ID: "mdm-1", RaftAddr: "127.0.0.1:8101", APIAddr: f.addr(), Suffrage: "voter"}}}
	return f
}

func (f *fakeMDM) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeMDM) reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeMDM) fail(w http.ResponseWriter, status int, code, format string, args ...any) {
	f.reply(w, status, api.Error{Error: fmt.Sprintf(format, args...), Code: code})
}

func (f *fakeMDM) ok(w http.ResponseWriter, r *http.Request) {
	f.reply(w, 200, map[string]bool{"ok": true})
}

var nouns = map[string]string{"pd": "protection domain", "faultset": "fault set", "pool": "pool",
	"sds": "SDS", "sdc": "SDC", "vol": "volume"}

func (f *fakeMDM) create(w http.ResponseWriter, r *http.Request) {
	kind, action := r.PathValue("kind"), r.PathValue("action")
	if _, ok := nouns[kind]; !ok || (action != "create" && action != "add") {
		f.fail(w, 404, "not_found", "no route %s", r.URL.Path)
		return
	}
	var obj map[string]any
	if err := json.NewDecoder(r.Body).Decode(&obj); err != nil {
		f.fail(w, 400, api.CodeBadRequest, "bad body: %v", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.objects[kind] {
		if o["name"] == obj["name"] {
			f.fail(w, 409, "conflict", "%s %q already exists", nouns[kind], obj["name"])
			return
		}
	}
	f.nextID++
	obj["id"] = f.nextID
	obj["created_at"] = 1700000000000
	switch kind {
	case "vol":
		obj["mappings"] = []any{}
	case "sds", "sdc":
		obj["state"] = "up"
	}
	f.objects[kind] = append(f.objects[kind], obj)
	f.index++
	f.reply(w, 200, obj)
}

func (f *fakeMDM) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	objs := f.objects[r.PathValue("kind")]
	if objs == nil {
		objs = []map[string]any{}
	}
	f.reply(w, 200, objs)
}

func (f *fakeMDM) find(kind, id string) (map[string]any, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.objects[kind] {
		if fmt.Sprint(o["id"]) == id {
			return o, true
		}
	}
	return nil, false
}

func (f *fakeMDM) get(w http.ResponseWriter, r *http.Request) {
	kind, id := r.PathValue("kind"), r.PathValue("id")
	o, ok := f.find(kind, id)
	if !ok {
		f.fail(w, 404, "not_found", "%s %s does not exist", nouns[kind], id)
		return
	}
	f.reply(w, 200, o)
}

func (f *fakeMDM) delete(w http.ResponseWriter, r *http.Request) {
	kind, id := r.PathValue("kind"), r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, o := range f.objects[kind] {
		if fmt.Sprint(o["id"]) == id {
			f.objects[kind] = append(f.objects[kind][:i], f.objects[kind][i+1:]...)
			f.reply(w, 200, map[string]any{"deleted": true})
			return
		}
	}
	f.fail(w, 404, "not_found", "%s %s does not exist", nouns[kind], id)
}

func (f *fakeMDM) sdsState(w http.ResponseWriter, r *http.Request) {
	o, ok := f.find("sds", r.PathValue("id"))
	if !ok {
		f.fail(w, 404, "not_found", "SDS %s does not exist", r.PathValue("id"))
		return
	}
	f.mu.Lock()
	o["state"] = map[string]string{"fail": "failed", "recover": "up", "enter": "maintenance", "exit": "up"}[r.PathValue("action")]
	f.mu.Unlock()
	f.reply(w, 200, o)
}

func (f *fakeMDM) mapVol(w http.ResponseWriter, r *http.Request) {
	var m fsm.Mapping
	json.NewDecoder(r.Body).Decode(&m)
	vol, ok := f.find("vol", strconv.FormatInt(m.VolumeID, 10))
	if !ok {
		f.fail(w, 404, "not_found", "volume %d does not exist", m.VolumeID)
		return
	}
	f.mu.Lock()
	m.Generation = 1
	vol["mappings"] = append(vol["mappings"].([]any), m)
	f.mu.Unlock()
	f.reply(w, 200, m)
}

func (f *fakeMDM) putLabel(w http.ResponseWriter, r *http.Request) {
	var req api.LabelRequest
	json.NewDecoder(r.Body).Decode(&req)
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	k := r.PathValue("id") + "/" + r.PathValue("key")
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := f.labels[k]
	if req.Expect != nil && *req.Expect != cur.Value {
		f.fail(w, 412, "precondition_failed", "label %q is %q, not %q", r.PathValue("key"), cur.Value, *req.Expect)
		return
	}
	l := fsm.Label{VolumeID: id, Key: r.PathValue("key"), Value: req.Value, Version: cur.Version + 1, UpdatedAt: 1700000000000}
	f.labels[k] = l
	f.reply(w, 200, l)
}

func (f *fakeMDM) getLabel(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	l, ok := f.labels[r.PathValue("id")+"/"+r.PathValue("key")]
	f.mu.Unlock()
	if !ok {
		f.fail(w, 404, "not_found", "label %q not set", r.PathValue("key"))
		return
	}
	f.reply(w, 200, l)
}

func (f *fakeMDM) lastBody(t *testing.T, route string) map[string]any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var m map[string]any
	if err := json.Unmarshal(f.bodies[route], &m); err != nil {
		t.Fatalf("no JSON body for %s: %v", route, err)
	}
	return m
}

func (f *fakeMDM) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}
