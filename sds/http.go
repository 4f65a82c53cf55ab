package sds

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"pflex/internal/agent"
	"pflex/sds/chunkstore"
)

// Status is GET /status of an SDS: membership (the agent's view) plus the data plane.
type Status struct {
	agent.Status
	IOVersion int64            `json:"io_version"` // version of the token keys and generations held
	TokenKeys int              `json:"token_keys"`
	Store     chunkstore.Stats `json:"store"`
	Data      DataStats        `json:"data"`
}

// ChunkReplica is one chunk of GET /volumes/{id}/chunks.
type ChunkReplica struct {
	Chunk     int64  `json:"chunk"`
	Epoch     int64  `json:"epoch"`
	Allocated bool   `json:"allocated"`
	Size      int64  `json:"size"`
	Role      string `json:"role,omitempty"`   // primary, secondary or rebuilding (a pending rebuild target) under the cached layout; "" if unknown or neither
	CRC32C    string `json:"crc32c,omitempty"` // with ?checksum=1: CRC-32C of the whole chunk, 8 hex digits
}

// ChunkList answers GET /volumes/{id}/chunks[?checksum=1]: the replicas this SDS holds.
type ChunkList struct {
	VolumeID int64          `json:"volume_id"`
	SDSID    int64          `json:"sds_id"`
	Chunks   []ChunkReplica `json:"chunks"`
}

// routes adds the SDS's HTTP routes (both listeners serve them).
func (s *Service) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "id": s.cfg.ID})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /volumes/{id}/chunks", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id <= 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "volume id must be a positive integer", "code": "bad_request"})
			return
		}
		list, err := s.ChunkList(id, r.URL.Query().Get("checksum") == "1")
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error(), "code": "internal"})
			return
		}
		writeJSON(w, http.StatusOK, list)
	})
}

// ChunkList lists the replicas held for volumeID, with their CRC-32C when checksum is set.
func (s *Service) ChunkList(volumeID int64, checksum bool) (ChunkList, error) {
	self := s.agent.SDSID()
	out := ChunkList{VolumeID: volumeID, SDSID: self, Chunks: []ChunkReplica{}}
	l := s.data.layouts.snapshot(volumeID)
	for _, c := range s.store.Chunks(volumeID) {
		cr := ChunkReplica{Chunk: c.Chunk, Epoch: c.Epoch, Allocated: true, Size: c.Size}
		if l != nil {
			switch reps, pending := l.ReplicaSet(c.Chunk); {
			case len(reps) > 0 && reps[0] == self:
				cr.Role = "primary"
			case pending && reps[len(reps)-1] == self:
				cr.Role = "rebuilding"
			case len(reps) > 1 && slices.Contains(reps[1:], self):
				cr.Role = "secondary"
			}
		}
		if checksum {
			sum, err := s.store.Checksum(chunkstore.Key{VolumeID: volumeID, Chunk: c.Chunk}, c.Size)
			if err != nil {
				return out, fmt.Errorf("chunk %d: %w", c.Chunk, err)
			}
			cr.CRC32C = fmt.Sprintf("%08x", sum)
		}
		out.Chunks = append(out.Chunks, cr)
	}
	return out, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
