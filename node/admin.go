package node

import (
	"context"
	"net/http"
	"time"

	"github.com/tierkv/tierkv/node/antientropy"
)

// Admin HTTP API (operators and tierkvctl):
//
//	POST /v1/admin/repair   run an anti-entropy pass of every range this
//	                        node replicates with all its other replicas;
//	                        answers when it ends → 200 antientropy.Stats (JSON),
//	                        or the error with the stats so far
//	GET  /v1/admin/repair   progress and totals of the scheduler → repairProgress
func (n *Node) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/admin/repair", func(w http.ResponseWriter, r *http.Request) {
		st, err := n.TriggerRepair(r.Context())
		if err != nil {
			writeJSON(w, httpStatus(err), struct {
				errorBody
				Stats antientropy.Stats `json:"stats"`
			}{errorBody{Error: err.Error(), Code: grpcCode(err).String()}, st})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/admin/repair", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, toRepairProgress(n.RepairMetrics()))
	})
	mux.HandleFunc("POST /v1/admin/backup", func(w http.ResponseWriter, r *http.Request) {
		if err := n.Backup(r.Context()); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "uploaded"})
	})
	mux.HandleFunc("POST /v1/admin/decommission", func(w http.ResponseWriter, r *http.Request) {
		if err := n.Decommission(r.Context()); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, n.topo.status())
	})
	mux.HandleFunc("POST /v1/admin/shards/rebuild", func(w http.ResponseWriter, r *http.Request) {
		st, err := n.RebuildShards(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/admin/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
}

// repairProgress is antientropy.Metrics as JSON.
type repairProgress struct {
	Running       bool              `json:"running"`
	PairsTotal    int               `json:"pairs_total"`
	PairsDone     int               `json:"pairs_done"`
	Passes        uint64            `json:"passes"`
	FailedPairs   uint64            `json:"failed_pairs"`
	Totals        antientropy.Stats `json:"totals"`
	LastPassStart *time.Time        `json:"last_pass_start,omitempty"`
	LastPassEnd   *time.Time        `json:"last_pass_end,omitempty"`
	LastPassError string            `json:"last_pass_error,omitempty"`
}

func toRepairProgress(m antientropy.Metrics) repairProgress {
	s := repairProgress{
		Running: m.Running, PairsTotal: m.PairsTotal, PairsDone: m.PairsDone,
		Passes: m.Passes, FailedPairs: m.FailedPairs, Totals: m.Totals,
	}
	if !m.LastPassStart.IsZero() {
		s.LastPassStart, s.LastPassEnd = &m.LastPassStart, &m.LastPassEnd
	}
	if m.LastPassErr != nil {
		s.LastPassError = m.LastPassErr.Error()
	}
	return s
}

// NodeStatus is GET /v1/admin/status.
type NodeStatus struct {
	ID string `json:"id"`
	// State is the node's gossiped state (JOINING, NORMAL, LEAVING).
	State string `json:"state"`
	// Serving is false once shutdown began.
	Serving bool `json:"serving"`
	// Replace is the progress of a replacement (--replace), if this
	// process started as one.
	Replace *ReplaceStatus `json:"replace,omitempty"`
	// Topology is the progress of this node's join or decommission.
	Topology *TopologyStatus `json:"topology,omitempty"`
}

// Status returns the node's status.
func (n *Node) Status() NodeStatus {
	return NodeStatus{ID: n.ID(), State: n.g.Self().State.String(), Serving: !n.closing.Load(), Replace: n.ReplaceStatus(), Topology: n.topo.status()}
}

// Backup flushes the engine and uploads a manifest backup now (the
// background loop does it every tiering.backup_interval).
func (n *Node) Backup(ctx context.Context) error { return n.tier.Backup(ctx) }
