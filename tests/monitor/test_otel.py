"""OpenTelemetry: GenAI spans per workflow, agent and call, parented and timed from events."""

from __future__ import annotations

import io
import sys

import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import export
from opentelemetry.sdk.trace.export import in_memory_span_exporter as in_memory

from aoe.monitor.otel import MISSING_EXTRA, OtelSink, from_environment
from tests.monitor.events_data import T0, every_event


def _spans():  # type: ignore[no-untyped-def]
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    sink = OtelSink(provider.get_tracer("test"))
    for event in every_event():
        sink.handle(event)
    provider.shutdown()
    return {s.name: s for s in exporter.get_finished_spans()}, exporter.get_finished_spans()


def test_a_span_per_workflow_agent_and_call_correctly_parented() -> None:
    """invoke_workflow > invoke_agent > chat (CLIENT), all in one trace."""
    from opentelemetry.trace import SpanKind

    by_name, spans = _spans()
    assert sorted(s.name for s in spans) == [
        "chat gpt-4o-mini", "chat gpt-4o-mini", "invoke_agent extract", "invoke_agent post",
        "invoke_workflow ap-close"]
    wf, agent = by_name["invoke_workflow ap-close"], by_name["invoke_agent extract"]
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert wf.parent is None
    assert agent.parent.span_id == wf.context.span_id
    assert {c.parent.span_id for c in calls} == {agent.context.span_id}
    assert {s.context.trace_id for s in spans} == {wf.context.trace_id}
    assert {c.kind for c in calls} == {SpanKind.CLIENT}


def test_span_times_come_from_the_events() -> None:
    """A call starts at its end minus its latency; an agent spans all its attempts."""
    by_name, spans = _spans()
    ns = 1_000_000_000
    agent = by_name["invoke_agent extract"]
    assert (agent.start_time, agent.end_time) == (int((T0 + 1) * ns), int((T0 + 4) * ns))
    last = max((s for s in spans if s.name.startswith("chat ")), key=lambda s: s.end_time)
    assert last.end_time == int((T0 + 4) * ns)
    assert last.start_time == int((T0 + 4 - 0.5) * ns)


def test_genai_attributes_and_errors() -> None:
    """gen_ai.* carry operation, provider, model and usage; failures carry error.type."""
    by_name, spans = _spans()
    calls = sorted((s for s in spans if s.name.startswith("chat ")), key=lambda s: s.end_time)
    ok = dict(calls[1].attributes)
    assert ok["gen_ai.operation.name"] == "chat"
    assert ok["gen_ai.provider.name"] == "openai"
    assert ok["gen_ai.request.model"] == "gpt-4o-mini"
    assert (ok["gen_ai.usage.input_tokens"], ok["gen_ai.usage.output_tokens"]) == (100, 50)
    assert ok["gen_ai.usage.cache_read.input_tokens"] == 30
    assert "error.type" not in ok
    refused = dict(calls[0].attributes)
    assert refused["error.type"] == "RateLimitedError"
    assert refused["http.response.status_code"] == 429
    assert refused["aoe.rate_limit.kind"] == "concurrency"
    assert refused["aoe.rate_limit.retry_after_s"] == 1.0
    assert "http.response.status_code" not in ok
    post = by_name["invoke_agent post"]
    assert post.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert post.attributes["error.type"] == "BUDGET_EXCEEDED"
    assert [e.name for e in by_name["invoke_agent extract"].events] == [
        "rate_limit_hit", "rate_limit_hit", "agent_retrying", "attempt"]


def test_from_environment_is_off_without_an_endpoint() -> None:
    """No OTLP endpoint: no exporter and no warning."""
    warn = io.StringIO()
    assert from_environment({}, warn) is None
    assert warn.getvalue() == ""


def test_from_environment_exports_when_an_endpoint_is_set() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT turns on an OTLP/HTTP exporting sink."""
    warn = io.StringIO()
    export_ = from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, warn)
    assert warn.getvalue() == ""  # no "pip install aoe[otel]": the test extra has the exporter
    assert export_ is not None
    export_.shutdown()


def test_missing_extra_is_a_one_line_warning_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without aoe[otel] installed, setting the endpoint prints one line naming the install."""
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    warn = io.StringIO()
    assert from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, warn) is None
    assert warn.getvalue() == MISSING_EXTRA + "\n"
    assert "pip install aoe[otel]" in MISSING_EXTRA
