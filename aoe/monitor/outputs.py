"""The live outputs of ``aoe run`` for operators, set up before and closed after a run.

``RunOutputs.start`` opens what the flags ask for (``--events``, ``--metrics-port``,
``--pushgateway``, an OTLP endpoint in the environment) and fails as bad input (exit 2)
before anything is spent; ``finish`` pushes the final metrics and closes everything. A
failed push or export is a warning: the run's exit code stays the run's. (The files a
finished run leaves for CI, ``--junit`` and the GitHub step summary, are
``aoe.report.outputs``.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from aoe.cost.budget import BudgetState
from aoe.errors import UsageError
from aoe.monitor.events import EventSink
from aoe.monitor.jsonl import JsonlSink
from aoe.monitor.otel import OtelExport, from_environment
from aoe.monitor.view import NO_RUN, RunView
from aoe.ratelimit import LimiterStats

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are asked for
    from aoe.monitor.metrics import MetricsServer, MetricsSink


@dataclass(frozen=True, slots=True)
class OutputOptions:
    """The monitoring flags of ``aoe run``."""

    events: Path | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    pushgateway: str | None = None


class RunOutputs:
    """The sinks of one run's outputs, and what to write once it is over."""

    def __init__(
        self, options: OutputOptions, warn: TextIO, environ: Mapping[str, str] = os.environ
    ) -> None:
        self.options = options
        self._warn = warn
        self._environ = environ
        self._view: RunView = NO_RUN
        self.jsonl: JsonlSink | None = None
        self.metrics: MetricsSink | None = None
        self.server: MetricsServer | None = None
        self.otel: OtelExport | None = None

    @classmethod
    def start(
        cls, options: OutputOptions, warn: TextIO, environ: Mapping[str, str] = os.environ
    ) -> RunOutputs:
        """Open the events file, the metrics endpoint and the OTLP exporter, as asked."""
        out = cls(options, warn, environ)
        if options.events is not None:
            try:
                out.jsonl = JsonlSink.open(options.events)
            except OSError as exc:
                raise UsageError(
                    f"cannot write --events file {options.events}: {exc.strerror}",
                    hint="pass a path in a writable directory",
                ) from None
        if options.metrics_port is not None or options.pushgateway:
            out._start_metrics()
        out.otel = from_environment(environ, warn)
        return out

    def _start_metrics(self) -> None:
        from aoe.monitor.metrics import MetricsSink  # noqa: PLC0415 - prometheus_client, 65 ms

        self.metrics = MetricsSink(
            limiter_stats=self._limiter_stats, budget_states=self._budget_states
        )
        port = self.options.metrics_port
        if port is None:
            return
        if not 0 <= port <= 65535:
            raise UsageError(
                f"--metrics-port must be a port number, got {port}",
                hint="pass a port from 1 to 65535, or 0 for any free port",
            )
        try:
            self.server = self.metrics.serve(port, self.options.metrics_addr)
        except OSError as exc:
            raise UsageError(
                f"cannot serve metrics on {self.options.metrics_addr}:{port}: {exc.strerror}",
                hint="pick a free port with --metrics-port, or 0 for any free port",
            ) from None
        print(
            f"metrics: http://{self.options.metrics_addr}:{self.server.port}/metrics",
            file=self._warn,
        )

    def _limiter_stats(self) -> tuple[LimiterStats, ...]:
        return self._view.limiter_stats()

    def _budget_states(self) -> tuple[BudgetState, ...]:
        return self._view.budget_states()

    @property
    def sinks(self) -> list[EventSink]:
        """The sinks to subscribe to the run's events."""
        found: list[EventSink | None] = [
            self.jsonl,
            self.metrics,
            self.otel.sink if self.otel else None,
        ]
        return [s for s in found if s is not None]

    def bind(self, view: RunView) -> None:
        """The running run: metrics read its limiters and budgets at scrape time."""
        self._view = view

    def finish(self, run_id: str | None) -> None:
        """Push the final metrics (of run ``run_id``, None if it never ran), close everything."""
        try:
            if run_id is not None:
                self._push(run_id)
        finally:
            self.close()

    def _push(self, run_id: str) -> None:
        if self.metrics is not None and self.options.pushgateway:
            try:
                self.metrics.push(self.options.pushgateway, run_id=run_id)
            except (OSError, ValueError) as exc:
                print(
                    f"warning: cannot push metrics to {self.options.pushgateway}: {exc}",
                    file=self._warn,
                )

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.otel is not None:
            self.otel.shutdown()
            self.otel = None
