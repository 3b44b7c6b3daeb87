"""OpenTelemetry traces of a run (the optional extra ``aoe[otel]``).

A span per workflow (``invoke_workflow {name}``), per agent (``invoke_agent {id}``, its
child) and per provider call (``chat {model}``, a CLIENT span under its agent), with the
GenAI semantic conventions' ``gen_ai.*`` attributes and start/end times taken from the
events, not from when the sink happened to see them. ``from_environment`` turns it on
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and exports over OTLP/HTTP; without the extra
installed it warns once and the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, TextIO

from aoe.monitor.events import (
    AgentFinished,
    AgentRetrying,
    AgentStarted,
    ApiCall,
    BudgetHit,
    Event,
    RateLimitHit,
    WorkflowFinished,
    WorkflowStarted,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
MISSING_EXTRA = (
    "warning: OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not "
    "installed; no traces are exported (pip install aoe[otel])"
)
FAILED_STATES = frozenset({"FAILED", "RATE_LIMITED", "BUDGET_EXCEEDED", "CANCELLED"})


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _model_name(model: str) -> str:
    """``openai/gpt-4o-mini`` → ``gpt-4o-mini`` (the request model, without the provider)."""
    return model.split("/", 1)[1] if "/" in model else model


class OtelSink:
    """Turns events into spans on ``tracer``; spans end when their final event arrives."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._workflows: dict[str, Span] = {}
        self._agents: dict[tuple[str, str], Span] = {}
        self._429s: dict[tuple[str, str, int], RateLimitHit] = {}  # told before its ApiCall

    def handle(self, event: Event) -> None:
        # the optional extra: this sink exists only once from_environment imported it
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        if isinstance(event, WorkflowStarted):
            span = self._tracer.start_span(
                f"invoke_workflow {event.name}",
                start_time=_ns(event.at),
                attributes={
                    "gen_ai.operation.name": "invoke_workflow",
                    "aoe.run_id": event.run_id,
                    "aoe.workflow.key": event.workflow,
                    "aoe.workflow.agents": event.agents_total,
                },
            )
            self._workflows[event.workflow] = span
        elif isinstance(event, AgentStarted):
            key = (event.workflow, event.agent)
            if key not in self._agents:
                parent = self._workflows.get(event.workflow)
                ctx = set_span_in_context(parent) if parent is not None else None
                attributes: dict[str, Any] = {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": event.agent,
                    "gen_ai.provider.name": event.model.split("/", 1)[0],
                    "gen_ai.request.model": _model_name(event.model),
                    "aoe.workflow.key": event.workflow,
                }
                if event.module:
                    attributes["aoe.module"] = event.module
                self._agents[key] = self._tracer.start_span(
                    f"invoke_agent {event.agent}",
                    context=ctx,
                    kind=SpanKind.INTERNAL,
                    start_time=_ns(event.at),
                    attributes=attributes,
                )
            else:
                self._agents[key].add_event(
                    "attempt", {"aoe.attempt": event.attempt}, timestamp=_ns(event.at)
                )
        elif isinstance(event, AgentRetrying | RateLimitHit | BudgetHit):
            if isinstance(event, RateLimitHit) and event.provider_429:
                self._429s[(event.workflow, event.agent, event.attempt)] = event
            agent_span = self._agents.get((event.workflow, event.agent))
            if agent_span is not None:
                agent_span.add_event(event.kind, self._detail(event), timestamp=_ns(event.at))
        elif isinstance(event, ApiCall):
            self._call(event)
        elif isinstance(event, AgentFinished):
            finished = self._agents.pop((event.workflow, event.agent), None)
            if finished is None:
                return
            finished.set_attributes(
                {
                    "gen_ai.usage.input_tokens": event.usage.input_tokens,
                    "gen_ai.usage.output_tokens": event.usage.output_tokens,
                    "aoe.state": event.state,
                    "aoe.attempts": event.attempts,
                    "aoe.cost_usd": float(event.cost_usd),
                }
            )
            if event.state in FAILED_STATES:
                finished.set_attribute("error.type", event.state)
                finished.set_status(Status(StatusCode.ERROR, event.error or event.state))
            finished.end(end_time=_ns(event.at))
        elif isinstance(event, WorkflowFinished):
            wf_span = self._workflows.pop(event.workflow, None)
            if wf_span is None:
                return
            cost = float(event.cost_usd)
            wf_span.set_attributes({"aoe.state": event.state, "aoe.cost_usd": cost})
            if event.state not in ("COMPLETED", "PARTIALLY_COMPLETED"):
                wf_span.set_attribute("error.type", event.state)
                wf_span.set_status(Status(StatusCode.ERROR, event.state))
            wf_span.end(end_time=_ns(event.at))

    @staticmethod
    def _detail(event: AgentRetrying | RateLimitHit | BudgetHit) -> dict[str, Any]:
        if isinstance(event, AgentRetrying):
            return {
                "aoe.attempt": event.attempt,
                "aoe.error": event.error,
                "aoe.delay_s": event.delay_s,
            }
        if isinstance(event, RateLimitHit):
            detail: dict[str, Any] = {
                "aoe.limiter": event.limiter,
                "aoe.waited_s": event.waited_s,
                "aoe.provider_429": event.provider_429,
            }
            if event.limited is not None:
                detail["aoe.rate_limit.kind"] = event.limited
            return detail
        return {"aoe.budget.scope": event.scope, "aoe.message": event.message}

    def _call(self, event: ApiCall) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        parent = self._agents.get((event.workflow, event.agent))
        ctx = set_span_in_context(parent) if parent is not None else None
        model = _model_name(event.model)
        u = event.usage
        span = self._tracer.start_span(
            f"chat {model}",
            context=ctx,
            kind=SpanKind.CLIENT,
            start_time=_ns(event.at - max(event.latency_s, 0.0)),
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": event.provider,
                "gen_ai.request.model": model,
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": u.input_tokens,
                "gen_ai.usage.output_tokens": u.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": u.cache_read_tokens,
                "gen_ai.usage.cache_creation.input_tokens": u.cache_write_tokens,
                "aoe.attempt": event.attempt,
                "aoe.turn": event.turn,
                "aoe.cost_usd": float(event.cost_usd),
                "aoe.cost_confirmed": event.cost_confirmed,
            },
        )
        hit = self._429s.pop((event.workflow, event.agent, event.attempt), None)
        if hit is not None:
            span.set_attributes(
                {
                    "http.response.status_code": 429,
                    "aoe.provider_429": True,
                    "aoe.rate_limit.kind": hit.limited or "rate_limit",
                }
            )
            if hit.retry_after_s is not None:
                span.set_attribute("aoe.rate_limit.retry_after_s", hit.retry_after_s)
        if event.status != "ok":
            span.set_attribute("error.type", event.status)
            span.set_status(Status(StatusCode.ERROR, event.status))
        span.end(end_time=_ns(event.at))


@dataclass(frozen=True, slots=True)
class OtelExport:
    """An enabled exporter: the sink to subscribe and ``shutdown`` to flush at the end."""

    sink: OtelSink
    shutdown: Callable[[], None]


def from_environment(environ: Mapping[str, str], warn: TextIO) -> OtelExport | None:
    """An OTLP/HTTP-exporting sink when an OTLP endpoint is configured, else None."""
    if not any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES):
        return None
    try:  # the optional extra, imported only when an endpoint is configured
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        print(MISSING_EXTRA, file=warn)
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": "aoe"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads OTEL_* env
    sink = OtelSink(provider.get_tracer("aoe", version("aoe")))
    return OtelExport(sink, provider.shutdown)
