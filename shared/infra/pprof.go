package infra

import (
	"net/http"
	"net/http/pprof"
)

// pprofMux serves Go's profiles on a mux of their own: importing
// net/http/pprof for its side effect would put them on
// http.DefaultServeMux, which no server here uses but which any could.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
