"""Tracing: W3C traceparent in, HTTP -> policies -> GenAI call -> queue/prefill/decode
spans, gen_ai.* attributes; exported in memory and over OTLP/HTTP to a real receiver."""

from __future__ import annotations

import http.server
import threading
from typing import ClassVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.observability.tracing import Tracing
from tokenmill.server.http_tracing import HttpTracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}


def test_spans_continue_the_callers_trace_and_nest_http_policies_call_phases():
    exporter = InMemorySpanExporter()
    with gateway_client(FakeEngine(step_delay_s=0.002), tracing=Tracing.to_exporter(exporter)) as c:
        r = c.post("/v1/chat/completions", json=chat(temperature=0.7), headers=TRACEPARENT)
        assert r.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    http = spans["POST /v1/chat/completions"]
    assert format(http.context.trace_id, "032x") == TRACE_ID
    assert format(http.parent.span_id, "016x") == PARENT_ID
    assert http.attributes["http.response.status_code"] == 200
    assert http.attributes["http.route"] == "/v1/chat/completions"
    call = spans["chat fake-model"]
    assert call.parent.span_id == http.context.span_id
    usage = r.json()["usage"]
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.request.model"] == "fake-model"
    assert call.attributes["gen_ai.request.temperature"] == 0.7
    assert call.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert call.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert call.attributes["gen_ai.response.id"] == r.json()["id"]
    assert tuple(call.attributes["gen_ai.response.finish_reasons"]) == ("length",)
    policy_spans = [s for s in spans.values() if s.name.startswith("policy ")]
    assert {s.name for s in policy_spans} >= {"policy model_access", "policy rate_limit"}
    assert all(s.parent.span_id == http.context.span_id for s in policy_spans)
    phases = [spans[n] for n in ("queue", "prefill", "decode")]
    assert all(p.parent.span_id == call.context.span_id for p in phases)
    assert phases[0].end_time <= phases[1].start_time
    assert phases[1].end_time <= phases[2].start_time
    assert call.start_time <= phases[0].start_time and phases[2].end_time <= call.end_time
    ours = [s for s in spans.values() if not s.name.startswith("GET ")]  # /ready polls
    assert len(ours) >= 6 and all(s.context.trace_id == http.context.trace_id for s in ours)


def test_a_failed_call_marks_its_span_with_the_error_code():
    exporter = InMemorySpanExporter()
    with gateway_client(FakeEngine(), tracing=Tracing.to_exporter(exporter)) as c:
        r = c.post("/v1/chat/completions", json=chat(max_tokens=10**6))
        assert r.status_code == 400
    call = next(s for s in exporter.get_finished_spans() if s.name == "chat fake-model")
    assert call.status.status_code.name == "ERROR"
    assert call.attributes["error.type"] == r.json()["error"]["code"]


def test_tracing_is_off_by_default_and_installs_nothing():
    with gateway_client(FakeEngine()) as c:
        app = c.app
        state = app.state.tokenmill
        assert state.pipeline.tracer is None
        assert not any(m.cls is HttpTracing for m in app.user_middleware)
        assert not any(type(p).__name__ == "CallTracingPolicy" for p in state.pipeline.policies)


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/v1/traces"
        assert self.headers["Content-Type"] == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.received.append(message)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_spans_reach_a_real_otlp_http_receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received.clear()
    try:
        tracing = Tracing.otlp(f"http://127.0.0.1:{server.server_port}/v1/traces")
        with gateway_client(FakeEngine(), tracing=tracing) as c:
            r = c.post("/v1/chat/completions", json=chat(temperature=0.5), headers=TRACEPARENT)
            assert r.status_code == 200
        tracing.shutdown()  # flushes the batch
    finally:
        server.shutdown()
    spans = [
        span
        for message in _Receiver.received
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {s.name for s in spans}
    assert {"POST /v1/chat/completions", "chat fake-model", "queue", "prefill", "decode"} <= names
    assert {s.trace_id.hex() for s in spans if not s.name.startswith("GET ")} == {TRACE_ID}
    call = next(s for s in spans if s.name == "chat fake-model")
    attrs = {a.key: a.value for a in call.attributes}
    assert attrs["gen_ai.usage.output_tokens"].int_value == r.json()["usage"]["completion_tokens"]
    service = {
        a.value.string_value
        for m in _Receiver.received
        for res in m.resource_spans
        for a in res.resource.attributes
        if a.key == "service.name"
    }
    assert service == {"tokenmill"}
