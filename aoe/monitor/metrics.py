"""Prometheus metrics of a run: a sink that counts events, served or pushed.

``MetricsSink`` keeps its own ``CollectorRegistry`` (never the process-global one), so
two runs in one process, or tests, never share counters. Counters and the duration
histogram move with events; rate-limit tiers and budgets are read when Prometheus
scrapes, through callables, so an operator sees limits and spend move during a long run.
``serve`` exposes ``/metrics`` on a loopback port; ``push`` sends the final figures to a
Pushgateway for short CI jobs (job ``aoe``, grouped by ``run_id``).

This module imports ``prometheus_client`` at the top: import it only when metrics are
asked for, so ``aoe --help`` stays fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import push_to_gateway, start_http_server
from prometheus_client.registry import Collector

from aoe.cost.budget import BudgetState
from aoe.monitor.events import (
    AgentFinished,
    AgentRetrying,
    AgentSkipped,
    AgentStarted,
    ApiCall,
    BudgetHit,
    Event,
    RateLimitHit,
    RunStarted,
    WorkflowFinished,
)
from aoe.ratelimit import LimiterStats

T = TypeVar("T")

DURATION_BUCKETS_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")


class _LiveState(Collector):
    """Gauges read at scrape time: each limiter tier's use and limit, each budget's money."""

    def __init__(
        self,
        limiter_stats: Callable[[], Iterable[LimiterStats]],
        budget_states: Callable[[], Iterable[BudgetState]],
    ) -> None:
        self._limiter_stats = limiter_stats
        self._budget_states = budget_states

    @staticmethod
    def _read(source: Callable[[], Iterable[T]]) -> list[T]:
        for _ in range(3):  # the run mutates on its loop while a scrape reads on a thread
            try:
                return list(source())
            except RuntimeError:
                continue
        return []

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "aoe_rate_limit_tier_used",
            "Use of a rate-limit tier in its current window (requests or tokens)",
            labels=["limiter", "tier"],
        )
        limit = GaugeMetricFamily(
            "aoe_rate_limit_tier_limit", "Limit of a rate-limit tier", labels=["limiter", "tier"]
        )
        in_flight = GaugeMetricFamily(
            "aoe_rate_limit_in_flight",
            "Requests holding a limiter's capacity now",
            labels=["limiter"],
        )
        queued = GaugeMetricFamily(
            "aoe_rate_limit_queued", "Calls waiting for a limiter", labels=["limiter"]
        )
        for stats in self._read(self._limiter_stats):
            for tier in stats.tiers:
                used.add_metric([stats.name, tier.name], float(tier.used))
                limit.add_metric([stats.name, tier.name], float(tier.limit))
            in_flight.add_metric([stats.name], float(stats.in_flight))
            queued.add_metric([stats.name], float(stats.queued))
        spent = GaugeMetricFamily(
            "aoe_budget_spent_usd",
            "Money spent against a budget scope (confirmed and unconfirmed)",
            labels=["scope"],
        )
        reserved = GaugeMetricFamily(
            "aoe_budget_reserved_usd", "Money reserved by calls in flight", labels=["scope"]
        )
        limit_usd = GaugeMetricFamily(
            "aoe_budget_limit_usd", "A budget scope's limit", labels=["scope"]
        )
        for state in self._read(self._budget_states):
            spent.add_metric([state.name], float(state.spent_usd + state.unconfirmed_usd))
            reserved.add_metric([state.name], float(state.reserved_usd))
            if state.limit_usd is not None:
                limit_usd.add_metric([state.name], float(state.limit_usd))
        yield from (used, limit, in_flight, queued, spent, reserved, limit_usd)


def _nothing() -> tuple[()]:
    return ()


class MetricsSink:
    """Updates Prometheus metrics from a run's events, in its own registry."""

    def __init__(
        self,
        *,
        limiter_stats: Callable[[], Iterable[LimiterStats]] = _nothing,
        budget_states: Callable[[], Iterable[BudgetState]] = _nothing,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.run_id: str | None = None
        r = self.registry
        self.agent_runs = Counter(
            "aoe_agent_runs", "Agents that reached a final state", ["workflow", "state"], registry=r
        )
        self.attempts = Counter(
            "aoe_agent_attempts", "Agent attempts started", ["workflow"], registry=r
        )
        self.retries = Counter(
            "aoe_agent_retries", "Attempts that failed and were retried", ["workflow"], registry=r
        )
        self.tokens = Counter(
            "aoe_tokens", "Tokens used by provider calls", ["provider", "model", "type"], registry=r
        )
        self.cost = Counter(
            "aoe_cost_usd", "Cost of provider calls in USD", ["provider", "model"], registry=r
        )
        self.calls = Counter(
            "aoe_api_calls",
            "Provider calls that came back",
            ["provider", "model", "status"],
            registry=r,
        )
        self.rl_wait = Counter(
            "aoe_rate_limit_wait_seconds",
            "Time calls waited for rate-limit capacity",
            ["limiter"],
            registry=r,
        )
        self.rl_429 = Counter(
            "aoe_rate_limit_429",
            "Provider 429 answers, by what they limited (rate_limit, concurrency, quota)",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.budget_hits = Counter(
            "aoe_budget_hits", "Reservations a budget refused", ["scope"], registry=r
        )
        self.duration = Histogram(
            "aoe_agent_duration_seconds",
            "Wall time of an agent, all attempts",
            ["state"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.workflows = Counter(
            "aoe_workflows", "Workflows that reached a final state", ["state"], registry=r
        )
        self.running = Gauge("aoe_agents_running", "Agents running an attempt now", registry=r)
        self._running: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        r.register(_LiveState(limiter_stats, budget_states))

    def handle(self, event: Event) -> None:
        with self._lock:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
        elif isinstance(event, AgentStarted):
            self.attempts.labels(event.workflow).inc()
            self._running.add((event.workflow, event.agent))
        elif isinstance(event, AgentRetrying):
            self.retries.labels(event.workflow).inc()
            self._running.discard((event.workflow, event.agent))
        elif isinstance(event, AgentFinished):
            self.agent_runs.labels(event.workflow, event.state).inc()
            self.duration.labels(event.state).observe(max(event.duration_s, 0.0))
            self._running.discard((event.workflow, event.agent))
        elif isinstance(event, AgentSkipped):
            self.agent_runs.labels(event.workflow, "SKIPPED").inc()
        elif isinstance(event, ApiCall):
            self._api_call(event)
        elif isinstance(event, RateLimitHit):
            self.rl_wait.labels(event.limiter).inc(max(event.waited_s, 0.0))
            if event.provider_429:
                provider, model = event.provider or event.limiter, event.model or ""
                self.rl_429.labels(provider, model, event.limited or "rate_limit").inc()
        elif isinstance(event, BudgetHit):
            self.budget_hits.labels(event.scope).inc()
        elif isinstance(event, WorkflowFinished):
            self.workflows.labels(event.state).inc()
        self.running.set(len(self._running))

    def _api_call(self, event: ApiCall) -> None:
        u = event.usage
        counts = (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
        )
        for kind, count in zip(TOKEN_TYPES, counts, strict=True):
            self.tokens.labels(event.provider, event.model, kind).inc(count)
        self.cost.labels(event.provider, event.model).inc(max(float(event.cost_usd), 0.0))
        self.calls.labels(event.provider, event.model, event.status).inc()

    def serve(self, port: int, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` on ``addr:port`` (0 picks a free port) until ``close``."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server, thread)

    def push(self, gateway: str, *, run_id: str | None = None, timeout_s: float = 10.0) -> None:
        """Push every metric to a Pushgateway: job ``aoe``, grouping key ``run_id``."""
        key = {"run_id": run_id or self.run_id or "unknown"}
        push_to_gateway(
            gateway, job="aoe", registry=self.registry, grouping_key=key, timeout=timeout_s
        )


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running ``/metrics`` endpoint."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
