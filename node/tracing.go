package node

import (
	"context"
	"fmt"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
)

// Tracing is off unless Config.OTLPEndpoint or Config.TraceExporter is set.
// Then the node has its own TracerProvider (nothing global): a span for the
// coordinator of each client request, a client span for each replica call
// and a server span on the replica (otelgrpc stats handlers), linked by
// W3C trace context.

var propagator = propagation.TraceContext{}

func (n *Node) startTracing() error {
	exp := n.cfg.TraceExporter
	if exp == nil && n.cfg.OTLPEndpoint != "" {
		var err error
		exp, err = otlptracegrpc.New(context.Background(),
			otlptracegrpc.WithEndpoint(n.cfg.OTLPEndpoint), otlptracegrpc.WithInsecure())
		if err != nil {
			return fmt.Errorf("node: otlp exporter: %w", err)
		}
	}
	if exp == nil {
		n.tracer = noop.NewTracerProvider().Tracer("tierkv")
		return nil
	}
	res := resource.NewSchemaless(attribute.String("service.name", "tierkv"), attribute.String("service.instance.id", string(n.id)))
	n.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	n.tracer = n.tp.Tracer("github.com/tierkv/tierkv/node")
	return nil
}

func (n *Node) tracingServerOptions() []grpc.ServerOption {
	if n.tp == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(n.tp), otelgrpc.WithPropagators(propagator)))}
}

func (n *Node) tracingDialOptions() []grpc.DialOption {
	if n.tp == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(n.tp), otelgrpc.WithPropagators(propagator)))}
}

func (n *Node) tracingHTTPHandler(h http.Handler) http.Handler {
	if n.tp == nil {
		return h
	}
	return otelhttp.NewHandler(h, "tierkv.http", otelhttp.WithTracerProvider(n.tp), otelhttp.WithPropagators(propagator))
}

// span starts the coordinator's span of a request.
func (n *Node) span(ctx context.Context, op string, c Consistency, key []byte) (context.Context, trace.Span) {
	if n.tp == nil {
		return ctx, noopSpan
	}
	return n.tracer.Start(ctx, "tierkv.coordinator/"+op, trace.WithAttributes(
		attribute.String("tierkv.consistency", c.String()), attribute.Int("tierkv.key_size", len(key))))
}

var noopSpan = trace.SpanFromContext(context.Background())

func (n *Node) stopTracing(ctx context.Context) error {
	if n.tp == nil {
		return nil
	}
	return n.tp.Shutdown(ctx)
}
