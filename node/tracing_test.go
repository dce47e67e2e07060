package node

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestTracing: with an exporter configured, a QUORUM write yields a
// coordinator span and one client span per remote replica call in the
// same trace, and replica server spans on the peers.
func TestTracing(t *testing.T) {
	exps := map[string]*tracetest.InMemoryExporter{}
	c := startCluster(t, 3, func(cfg *Config) {
		exps[cfg.ID] = tracetest.NewInMemoryExporter()
		cfg.TraceExporter = exps[cfg.ID]
	})
	if _, err := c.nodes[0].Put(ctxT(t), []byte("traced"), []byte("v"), All, 0); err != nil {
		t.Fatal(err)
	}
	var coord, calls, served int
	count := func() {
		for _, n := range c.nodes {
			// NB: not Close: shutting the provider down clears an
			// in-memory exporter.
			if err := n.tp.ForceFlush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}
		coord, calls, served = 0, 0, 0
		var traceID string
		for _, s := range exps["n1"].GetSpans() {
			if s.Name == "tierkv.coordinator/write" {
				coord++
				traceID = s.SpanContext.TraceID().String()
			}
		}
		for _, s := range exps["n1"].GetSpans() {
			if s.Name == "tierkv.kv.v1.Replica/Apply" && s.SpanContext.TraceID().String() == traceID {
				calls++
			}
		}
		for _, id := range []string{"n2", "n3"} {
			for _, s := range exps[id].GetSpans() {
				if s.Name == "tierkv.kv.v1.Replica/Apply" && s.SpanContext.TraceID().String() == traceID {
					served++
				}
			}
		}
	}
	// otelgrpc ends a server span after the response is sent, so a
	// replica's span may end just after the coordinator returned: poll.
	waitFor(t, 10*time.Second, "replica server spans", func() bool {
		count()
		return served >= 2
	})
	if coord != 1 || calls != 2 || served != 2 {
		t.Fatalf("coordinator spans %d (want 1), replica client spans %d (want 2), replica server spans %d (want 2)", coord, calls, served)
	}
}
