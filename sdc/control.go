package sdc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"pflex/internal/agent"
	"pflex/internal/api"
	"pflex/sdc/nbd"
)

// The control API's IO routes (the prototype's, for scripts and smoke tests): they go through
// the same engine as NBD.

// IOWriteRequest is the body of POST /vol/{id}/io/write.
type IOWriteRequest struct {
	SDCID       int64  `json:"sdc_id,omitempty"` // the prototype sends it; ignored
	OffsetBytes int64  `json:"offset_bytes"`
	DataB64     string `json:"data_b64"`
}

// IOReadRequest is the body of POST /vol/{id}/io/read.
type IOReadRequest struct {
	SDCID       int64 `json:"sdc_id,omitempty"`
	OffsetBytes int64 `json:"offset_bytes"`
	LengthBytes int64 `json:"length_bytes"`
}

// IOReadResponse answers POST /vol/{id}/io/read.
type IOReadResponse struct {
	DataB64 string `json:"data_b64"`
}

// IOWriteResponse answers POST /vol/{id}/io/write.
type IOWriteResponse struct {
	WrittenBytes int64 `json:"written_bytes"`
}

// maxControlIO bounds one control-API IO (it is for scripts, not bulk data).
const maxControlIO = 32 << 20

// Error codes of the control API beyond api's.
const (
	codeNotMapped = "not_mapped"
	codeReadOnly  = "read_only"
	codeIO        = "io_error"
	codeNoSpace   = "no_space"
)

// Status is the SDC's GET /status: its membership (agent.Status) and its exports.
type Status struct {
	agent.Status
	NBDSocket string `json:"nbd_socket,omitempty"` // the NBD Unix socket, if one is served
	ExporterStatus
}

// ioRoutes adds the IO routes and GET /status to mux.
func (s *Service) ioRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /vol/{id}/io/write", s.ioWrite)
	mux.HandleFunc("POST /vol/{id}/io/read", s.ioRead)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.FullStatus())
	})
}

// volumeFor resolves {id}; it writes the error answer and returns nil when it cannot.
func (s *Service) volumeFor(w http.ResponseWriter, r *http.Request) *Volume {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("volume id %q is not a positive integer", r.PathValue("id")))
		return nil
	}
	v, ok := s.exporter.Volume(id)
	if !ok {
		writeError(w, http.StatusNotFound, codeNotMapped, fmt.Sprintf("volume %d is not mapped to this SDC (%s)", id, s.cfg.ID))
		return nil
	}
	return v
}

func decodeBody(w http.ResponseWriter, r *http.Request, out any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 2*maxControlIO))
	if err := dec.Decode(out); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

// checkRange answers 400 for an IO outside the volume.
func checkRange(w http.ResponseWriter, v *Volume, off, n int64) bool {
	switch {
	case off < 0:
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("offset_bytes %d is negative", off))
	case n < 0 || n > maxControlIO:
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("length %d must be between 0 and %d", n, maxControlIO))
	case off+n > v.Size():
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("%d bytes at offset %d go beyond the volume's %d bytes", n, off, v.Size()))
	default:
		return true
	}
	return false
}

func (s *Service) ioWrite(w http.ResponseWriter, r *http.Request) {
	v := s.volumeFor(w, r)
	if v == nil {
		return
	}
	var req IOWriteRequest
	if !decodeBody(w, r, &req) {
		return
	}
	data, err := base64.StdEncoding.DecodeString(req.DataB64)
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "data_b64: "+err.Error())
		return
	}
	if !checkRange(w, v, req.OffsetBytes, int64(len(data))) {
		return
	}
	if err := v.WriteAt(r.Context(), data, req.OffsetBytes, true); err != nil {
		writeIOError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, IOWriteResponse{WrittenBytes: int64(len(data))})
}

func (s *Service) ioRead(w http.ResponseWriter, r *http.Request) {
	v := s.volumeFor(w, r)
	if v == nil {
		return
	}
	var req IOReadRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !checkRange(w, v, req.OffsetBytes, req.LengthBytes) {
		return
	}
	buf := make([]byte, req.LengthBytes)
	if err := v.ReadAt(r.Context(), buf, req.OffsetBytes); err != nil {
		writeIOError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, IOReadResponse{DataB64: base64.StdEncoding.EncodeToString(buf)})
}

// writeIOError maps an engine error to an HTTP answer.
func writeIOError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, api.CodeTimeout, err.Error())
	case errors.Is(err, ErrUnmapped), errors.Is(err, ErrClosed):
		writeError(w, http.StatusNotFound, codeNotMapped, err.Error())
	case errors.Is(err, nbd.ErrPerm):
		writeError(w, http.StatusForbidden, codeReadOnly, err.Error())
	case errors.Is(err, nbd.ErrInvalid):
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
	case errors.Is(err, nbd.ErrNoSpace):
		writeError(w, http.StatusInsufficientStorage, codeNoSpace, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, codeIO, err.Error())
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.Error{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
