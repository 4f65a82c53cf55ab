package agent

import (
	"net/http"
	"net/http/pprof"
)

// HandlePprof serves Go's runtime profiles (net/http/pprof) under /debug/pprof/ on mux. SDSs
// and SDCs add it to their mgmt listener only when `debug_pprof = true`: the profiles expose
// no data, but a CPU profile costs the data path while it runs.
func HandlePprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
