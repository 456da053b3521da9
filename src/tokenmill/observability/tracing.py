"""OpenTelemetry tracing: one provider per server, off unless --otlp-endpoint is given.

When tracing is off nothing here is built and no span is made: the middleware and the
tracing policy are not installed, and the pipeline's policy spans are skipped. When on,
spans are batched and exported over OTLP/HTTP off the request path. The provider is an
object handed to who needs it, never the process-global one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE_NAME = "tokenmill"
_propagator = TraceContextTextMapPropagator()


class Tracing:
    """A tracer provider, its tracer, and the W3C trace-context propagator."""

    def __init__(self, processor: SpanProcessor, service_name: str = SERVICE_NAME):
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(processor)
        self.tracer: Tracer = self.provider.get_tracer("tokenmill")

    @classmethod
    def otlp(cls, endpoint: str) -> Tracing:
        """Exports to an OTLP/HTTP collector at `endpoint` (e.g. .../v1/traces), batched."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))

    @classmethod
    def to_exporter(cls, exporter: SpanExporter) -> Tracing:
        """Exports each span as it ends (tests, with the SDK's in-memory exporter)."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        return cls(SimpleSpanProcessor(exporter))

    @staticmethod
    def extract(headers: Mapping[str, str]) -> Context:
        """The parent context a W3C `traceparent` (and `tracestate`) header names."""
        return _propagator.extract(carrier=dict(headers))

    def shutdown(self) -> None:
        """Exports what is pending and stops the exporter."""
        self.provider.shutdown()


def clock_offset_ns() -> int:
    """Wall-clock minus monotonic nanoseconds, now. Convert one call's timestamps with
    one offset, so that their order survives the conversion."""
    return time.time_ns() - time.monotonic_ns()


def wall_ns(monotonic_s: float, offset_ns: int) -> int:
    """A time.monotonic() reading as the wall-clock nanoseconds spans are stamped with."""
    return int(monotonic_s * 1e9) + offset_ns
