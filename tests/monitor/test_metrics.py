"""Prometheus: a real scrape of ``/metrics`` during a run, and a push to a Pushgateway."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from aoe.app.prepare import RunOptions, prepare
from aoe.app.run import RunHandle
from aoe.monitor.metrics import MetricsSink
from aoe.monitor.outputs import OutputOptions, RunOutputs
from aoe.spec.models import LimitsSpec, ProviderConfig
from tests.monitor.events_data import every_event
from tests.report.workflow_data import write_workflow


def _value(text: str, series: str) -> float:
    """The value of one exposition line that starts with ``series``."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in metrics:\n{text}")


def _prepared(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The small workflow, simulated, with a request limit on the simulator's key."""
    prepared = prepare(RunOptions(files=(write_workflow(tmp_path),), simulate=True,
                                  db_path=tmp_path / "aoe.db"))
    sim = ProviderConfig("sim", "sim", limits=LimitsSpec(requests_per_minute=600,
                                                       concurrent_requests=4))
    config = dataclasses.replace(prepared.config,
                                 providers={**prepared.config.providers, "sim": sim})
    return dataclasses.replace(prepared, config=config)


async def test_metrics_endpoint_shows_a_run_while_it_runs(tmp_path: Path) -> None:
    """An operator scraping /metrics mid-run sees agents running, limits and spend."""
    prepared = _prepared(tmp_path)
    outputs = RunOutputs.start(OutputOptions(metrics_port=0), warn=io.StringIO())
    handle = RunHandle(prepared, outputs.sinks)
    outputs.bind(handle)
    assert outputs.server is not None
    url = f"http://127.0.0.1:{outputs.server.port}/metrics"
    try:
        run = asyncio.create_task(handle.execute())
        async with httpx.AsyncClient() as client:
            mid = ""
            for _ in range(200):
                mid = (await client.get(url)).text
                running = "aoe_agents_running 1.0" in mid or "aoe_agents_running 2.0" in mid
                if running and "aoe_rate_limit_tier_limit{" in mid:
                    break
                await asyncio.sleep(0.01)
            result = await run
            end = (await client.get(url)).text
    finally:
        outputs.close()
    assert "aoe_agents_running 0.0" not in mid
    assert 'aoe_rate_limit_tier_limit{limiter="sim",tier="requests_per_minute"} 600.0' in mid
    assert result.exit_code == 4
    assert _value(end, 'aoe_agent_runs_total{state="COMPLETED",workflow="ap-close"}') == 3
    assert _value(end, 'aoe_agent_runs_total{state="FAILED",workflow="ap-close"}') == 1
    assert _value(end, 'aoe_agent_runs_total{state="SKIPPED",workflow="ap-close"}') == 1
    assert _value(end, 'aoe_agent_retries_total{workflow="ap-close"}') == 2
    assert _value(end, 'aoe_agent_attempts_total{workflow="ap-close"}') == 6
    assert _value(end, 'aoe_workflows_total{state="PARTIALLY_COMPLETED"}') == 1
    assert _value(end, "aoe_agents_running") == 0
    assert _value(end, 'aoe_agent_duration_seconds_count{state="COMPLETED"}') == 3
    cost = sum(float(line.rsplit(" ", 1)[1]) for line in end.splitlines()
               if line.startswith("aoe_cost_usd_total{"))
    assert cost == pytest.approx(float(result.cost_usd))
    tokens = sum(float(line.rsplit(" ", 1)[1]) for line in end.splitlines()
                 if line.startswith("aoe_tokens_total{") and 'type="output"' in line)
    assert tokens == result.usage.output_tokens
    assert _value(end, 'aoe_rate_limit_tier_used{limiter="sim",tier="requests_per_minute"}') == 6
    assert 'aoe_budget_spent_usd{scope="' in end


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A tiny Pushgateway-like server on loopback that records what it is sent."""
    received: list[tuple[str, str, bytes]] = []
    handler = type("Gateway", (_Gateway,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    # answer shutdown() within 10 ms, not serve_forever's default 0.5 s poll
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_push_sends_final_figures_grouped_by_run_id(gateway) -> None:  # type: ignore[no-untyped-def]
    """--pushgateway PUTs every metric under job aoe and the run's id."""
    url, received = gateway
    sink = MetricsSink()
    for event in every_event():
        sink.handle(event)
    sink.push(url)
    assert len(received) == 1
    method, path, body = received[0]
    assert (method, path) == ("PUT", "/metrics/job/aoe/run_id/run1")
    text = body.decode()
    assert _value(text, 'aoe_agent_runs_total{state="BUDGET_EXCEEDED",workflow="ap"}') == 1
    assert _value(text, 'aoe_rate_limit_429_total{kind="concurrency",model="openai/gpt-4o-mini",'
                        'provider="openai"}') == 1
    assert _value(text, 'aoe_rate_limit_wait_seconds_total{limiter="openai"}') == 0.5
    assert _value(text, 'aoe_tokens_total{model="openai/gpt-4o-mini",provider="openai",'
                        'type="cache_read"}') == 30
    assert _value(text, 'aoe_cost_usd_total{model="openai/gpt-4o-mini",provider="openai"}') \
        == pytest.approx(0.003)


def test_two_sinks_never_share_counters() -> None:
    """Each sink has a private registry: a second run starts from zero."""
    first, second = MetricsSink(), MetricsSink()
    for event in every_event():
        first.handle(event)
    assert first.registry.get_sample_value("aoe_workflows_total", {"state": "BUDGET_EXCEEDED"}) == 1
    assert second.registry.get_sample_value("aoe_workflows_total",
                                            {"state": "BUDGET_EXCEEDED"}) is None


def test_a_push_that_fails_is_a_warning_not_a_crash() -> None:
    """An unreachable Pushgateway leaves a warning; the run's outputs still finish."""
    warn = io.StringIO()
    outputs = RunOutputs.start(OutputOptions(pushgateway="http://127.0.0.1:9"), warn)
    assert outputs.metrics is not None
    for event in every_event():
        outputs.metrics.handle(event)
    from tests.report.test_junit import _result

    outputs.finish(_result())
    assert "warning: cannot push metrics to http://127.0.0.1:9" in warn.getvalue()
