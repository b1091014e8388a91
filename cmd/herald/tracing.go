package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Traces are configured by the standard OpenTelemetry variables alone, as
// every other OpenTelemetry SDK is, so that a deployment that sets them
// for its other services sets them for herald too. They are off unless
// the variables ask for them: a hub nobody collects traces from pays
// nothing for them.
//
// The exporter is OTLP over HTTP (protobuf, the protocol the
// specification makes the default, or JSON). The OTLP/gRPC exporter is
// left out on purpose: it would bring a gRPC client into the binary for
// what a collector's HTTP port does as well.

// defaultTracesEndpoint is where spans go when tracing is asked for with
// no endpoint: the specification's default for OTLP/HTTP.
const defaultTracesEndpoint = "http://localhost:4318/v1/traces"

// tracingPlan is what the variables ask for.
type tracingPlan struct {
	on bool
	// why says, when off, which variable turned tracing off, or that none
	// turned it on.
	why string
	// endpoint is where spans go, without credentials, for the log;
	// explicit is false when no variable names one (defaultTracesEndpoint).
	endpoint string
	explicit bool
	protocol string
	sampler  string
}

// planTracing reads the variables through getenv and checks that herald
// can do what they ask. Tracing is on when OTEL_TRACES_EXPORTER is otlp or
// an OTLP endpoint is set, unless OTEL_SDK_DISABLED is true or
// OTEL_TRACES_EXPORTER is none.
func planTracing(getenv func(string) string) (tracingPlan, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") {
		return tracingPlan{why: "OTEL_SDK_DISABLED=true"}, nil
	}
	otlp := false
	if v := env("OTEL_TRACES_EXPORTER"); v != "" {
		for _, e := range strings.Split(v, ",") {
			switch e = strings.ToLower(strings.TrimSpace(e)); e {
			case "none":
				return tracingPlan{why: "OTEL_TRACES_EXPORTER=none"}, nil
			case "otlp":
				otlp = true
			default:
				return tracingPlan{}, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: herald exports traces with otlp only (or none)", v)
			}
		}
	}
	p := tracingPlan{on: true, endpoint: defaultTracesEndpoint, protocol: "http/protobuf", sampler: "parentbased_always_on"}
	if ep := env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); ep != "" {
		u, err := endpointURL("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ep)
		if err != nil {
			return tracingPlan{}, err
		}
		p.endpoint, p.explicit = u.String(), true
	} else if ep := env("OTEL_EXPORTER_OTLP_ENDPOINT"); ep != "" {
		u, err := endpointURL("OTEL_EXPORTER_OTLP_ENDPOINT", ep)
		if err != nil {
			return tracingPlan{}, err
		}
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
		p.endpoint, p.explicit = u.String(), true
	}
	if !otlp && !p.explicit {
		return tracingPlan{why: "neither OTEL_TRACES_EXPORTER=otlp nor an OTLP endpoint is set"}, nil
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		v := env(k)
		if v == "" {
			continue
		}
		switch v {
		case "http/protobuf", "http/json":
			p.protocol = v
		case "grpc":
			return tracingPlan{}, fmt.Errorf("%s=grpc: herald exports traces over OTLP/HTTP only; use http/protobuf and the collector's HTTP port (4318)", k)
		default:
			return tracingPlan{}, fmt.Errorf("%s=%s: want http/protobuf or http/json", k, v)
		}
		break
	}
	if v := strings.ToLower(env("OTEL_TRACES_SAMPLER")); v != "" {
		if err := checkSampler(v, env("OTEL_TRACES_SAMPLER_ARG")); err != nil {
			return tracingPlan{}, err
		}
		p.sampler = v
		if arg := env("OTEL_TRACES_SAMPLER_ARG"); arg != "" && strings.HasSuffix(v, "traceidratio") {
			p.sampler += " " + arg
		}
	}
	return p, nil
}

// endpointURL parses an OTLP endpoint variable. The exporter would pass
// over one it cannot parse and send to its default instead.
func endpointURL(name, v string) (*url.URL, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s must be an http:// or https:// URL, not %q", name, redactURL(v))
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u, nil
}

// redactURL keeps credentials that a mistyped URL may hold out of an
// error message.
func redactURL(v string) string {
	if at := strings.LastIndexByte(v, '@'); at >= 0 {
		return "…" + v[at:]
	}
	return v
}

// checkSampler checks OTEL_TRACES_SAMPLER and its argument. The SDK reads
// both itself, but it would only report a mistake through OpenTelemetry's
// error handler and sample everything instead; herald refuses to start.
func checkSampler(name, arg string) error {
	switch name {
	case "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return nil
	case "traceidratio", "parentbased_traceidratio":
		if arg == "" {
			return nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%s: want a ratio from 0 to 1", arg)
		}
		return nil
	}
	return fmt.Errorf("OTEL_TRACES_SAMPLER=%s: want always_on, always_off, traceidratio or their parentbased_ forms", name)
}

// newTracing returns the tracer the hub and the handler share, nil when
// the environment does not ask for traces, and the function that flushes
// the spans still queued and stops the exporter, within timeout, at exit.
// Everything else the variables say (headers, TLS files, compression,
// timeouts, the batch processor's OTEL_BSP_*, the sampler, the resource)
// is read by the SDK itself.
func newTracing(ctx context.Context, log *slog.Logger, timeout time.Duration) (trace.Tracer, func(), error) {
	plan, err := planTracing(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	if !plan.on {
		log.Info("tracing off", "why", plan.why)
		return nil, func() {}, nil
	}
	var opts []otlptracehttp.Option
	if !plan.explicit {
		opts = append(opts, otlptracehttp.WithEndpointURL(defaultTracesEndpoint))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("trace exporter: %w", err)
	}
	// The variables come after the defaults, so that they override them.
	res, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", "herald"),
			attribute.String("service.version", version()),
		),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	// Export failures go to OpenTelemetry's process-wide error handler,
	// which would print them unstructured: send them to the log.
	tlog := log.WithGroup("tracing")
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { tlog.Warn("trace export", "err", err) }))
	service, _ := res.Set().Value("service.name")
	log.Info("tracing on", "exporter", "otlp", "endpoint", plan.endpoint, "protocol", plan.protocol,
		"sampler", plan.sampler, "service", service.AsString())
	stop := func() {
		// The process is stopping: its context has ended, the flush
		// must not.
		ctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), timeout, errors.New("shutdown timeout"))
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			tlog.Error("flush spans at exit", "err", err, "cause", context.Cause(ctx))
		}
	}
	return tp.Tracer("github.com/herald-hub/herald"), stop, nil
}
