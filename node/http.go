package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTP API:
//
//	POST|PUT /v1/kv/{key}   body = value          → 200 {"version": N}
//	GET      /v1/kv/{key}                         → 200 body = value, ETag and X-Version
//	DELETE   /v1/kv/{key}                         → 200 {"version": N}
//	GET      /v1/topology                         → the ring (JSON)
//	GET      /metrics                             → Prometheus
//	GET      /healthz                             → 200 while serving
//	POST|GET /v1/admin/...                        → admin.go
//	GET      /debug/pprof/...                     → Go profiles (enable_pprof)
//
// Request headers: X-Consistency-Level (ONE, QUORUM, ALL), X-Last-Version
// (writes: the highest version the client saw). Errors are JSON
// {"error": "...", "code": "UNAVAILABLE"} with the status of httpStatus.
const (
	headerConsistency = "X-Consistency-Level"
	headerLastVersion = "X-Last-Version"
	headerVersion     = "X-Version"
)

func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/kv/{key...}", n.httpGet)
	mux.HandleFunc("POST /v1/kv/{key...}", n.httpPut)
	mux.HandleFunc("PUT /v1/kv/{key...}", n.httpPut)
	mux.HandleFunc("DELETE /v1/kv/{key...}", n.httpDelete)
	mux.HandleFunc("GET /v1/topology", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Topology())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if n.closing.Load() {
			writeError(w, ErrClosed)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "serving", "id": n.ID()})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	n.adminRoutes(mux)
	if n.cfg.EnablePprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return n.tracingHTTPHandler(mux)
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, httpStatus(err), errorBody{Error: err.Error(), Code: grpcCode(err).String()})
}

// request holds what every key request parses: the key, the level and the
// last-seen version; it also takes an in-flight slot.
func (n *Node) parseRequest(w http.ResponseWriter, r *http.Request) (key []byte, c Consistency, last uint64, release func(), ok bool) {
	release, err := n.acquire()
	if err != nil {
		writeError(w, err)
		return nil, 0, 0, nil, false
	}
	key = []byte(r.PathValue("key"))
	if c, err = ParseConsistency(r.Header.Get(headerConsistency)); err != nil {
		release()
		writeError(w, err)
		return nil, 0, 0, nil, false
	}
	if s := r.Header.Get(headerLastVersion); s != "" {
		if last, err = strconv.ParseUint(s, 10, 64); err != nil {
			release()
			writeError(w, errorf(ErrInvalidArgument, "%s %q is not a version", headerLastVersion, s))
			return nil, 0, 0, nil, false
		}
	}
	if err := n.validateKey(key); err != nil {
		release()
		writeError(w, err)
		return nil, 0, 0, nil, false
	}
	return key, c, last, release, true
}

func setVersion(w http.ResponseWriter, v uint64) {
	s := strconv.FormatUint(v, 10)
	w.Header().Set("ETag", `"`+s+`"`)
	w.Header().Set(headerVersion, s)
}

func (n *Node) httpGet(w http.ResponseWriter, r *http.Request) {
	key, c, _, release, ok := n.parseRequest(w, r)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := n.requestContext(r.Context())
	defer cancel()
	val, v, err := n.Get(ctx, key, c)
	if err != nil {
		if v != 0 {
			setVersion(w, v) // the tombstone's version
		}
		writeError(w, err)
		return
	}
	setVersion(w, v)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(val)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(val)
}

func (n *Node) httpPut(w http.ResponseWriter, r *http.Request) {
	key, c, last, release, ok := n.parseRequest(w, r)
	if !ok {
		return
	}
	defer release()
	if r.ContentLength > int64(n.cfg.MaxValueSize) {
		writeError(w, errorf(ErrTooLarge, "value of %d bytes exceeds max_value_size %d", r.ContentLength, n.cfg.MaxValueSize))
		return
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, int64(n.cfg.MaxValueSize)), r.ContentLength)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, errorf(ErrTooLarge, "value exceeds max_value_size %d", n.cfg.MaxValueSize))
			return
		}
		writeError(w, errorf(ErrInvalidArgument, "reading body: %v", err))
		return
	}
	ctx, cancel := n.requestContext(r.Context())
	defer cancel()
	v, err := n.Put(ctx, key, body, c, last)
	if err != nil {
		writeError(w, err)
		return
	}
	setVersion(w, v)
	writeJSON(w, http.StatusOK, map[string]uint64{"version": v})
}

func (n *Node) httpDelete(w http.ResponseWriter, r *http.Request) {
	key, c, last, release, ok := n.parseRequest(w, r)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := n.requestContext(r.Context())
	defer cancel()
	v, err := n.Delete(ctx, key, c, last)
	if err != nil {
		writeError(w, err)
		return
	}
	setVersion(w, v)
	writeJSON(w, http.StatusOK, map[string]uint64{"version": v})
}

// readBody reads a request body; with a declared length (at most the bound,
// checked by the caller) it reads into one buffer of that size instead of
// growing one (io.ReadAll copies a 10 KiB body six times).
func readBody(r io.Reader, length int64) ([]byte, error) {
	if length < 0 {
		return io.ReadAll(r)
	}
	buf := make([]byte, length)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return nil, fmt.Errorf("body shorter than its Content-Length %d", length)
		}
		return nil, err
	}
	// The body must end here (net/http enforces Content-Length; a reader
	// that does not is read to its end and refused).
	var one [1]byte
	if k, err := r.Read(one[:]); k > 0 || (err != nil && err != io.EOF) {
		if err == nil {
			err = fmt.Errorf("body longer than its Content-Length %d", length)
		}
		return nil, err
	}
	return buf, nil
}
