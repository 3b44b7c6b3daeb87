"""The outputs ``aoe run`` makes for CI and operators, set up before and finished after a run.

``RunOutputs.start`` opens what the flags ask for (``--events``, ``--metrics-port``,
``--pushgateway``, an OTLP endpoint in the environment) and fails as bad input (exit 2)
before anything is spent; ``finish`` writes ``--junit`` and the GitHub step summary,
pushes metrics and closes everything. A failed push or export is a warning: the run's
exit code stays the run's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from aoe.errors import UsageError
from aoe.monitor.events import EventSink

if TYPE_CHECKING:
    from aoe.engine.results import RunResult
    from aoe.monitor.jsonl import JsonlSink
    from aoe.monitor.metrics import MetricsServer, MetricsSink
    from aoe.monitor.otel import OtelExport


@dataclass(frozen=True, slots=True)
class OutputOptions:
    """The CI and monitoring flags of ``aoe run``."""

    junit: Path | None = None
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
        self._handle: Any = None
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
            from aoe.monitor.jsonl import JsonlSink

            try:
                out.jsonl = JsonlSink.open(options.events)
            except OSError as exc:
                raise UsageError(
                    f"cannot write --events file {options.events}: {exc.strerror}",
                    hint="pass a path in a writable directory",
                ) from None
        if options.metrics_port is not None or options.pushgateway:
            out._start_metrics()
        from aoe.monitor.otel import from_environment

        out.otel = from_environment(environ, warn)
        return out

    def _start_metrics(self) -> None:
        from aoe.monitor.metrics import MetricsSink

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

    def _limiter_stats(self) -> Iterable[Any]:
        limiters = getattr(self._handle, "limiters", None)
        return limiters.all_stats() if limiters is not None else ()

    def _budget_states(self) -> Iterable[Any]:
        budgets = getattr(self._handle, "budgets", None)
        return budgets.states() if budgets is not None else ()

    @property
    def sinks(self) -> list[EventSink]:
        """The sinks to subscribe to the run's events."""
        found: list[Any] = [self.jsonl, self.metrics, self.otel.sink if self.otel else None]
        return [s for s in found if s is not None]

    def bind(self, handle: Any) -> None:
        """The running ``RunHandle``: metrics read its limiters and budgets at scrape time."""
        self._handle = handle

    def finish(self, result: RunResult | None, jobs: Iterable[Any] = ()) -> None:
        """Write the JUnit file and step summary, push metrics, close everything."""
        try:
            if result is not None:
                self._write_reports(result, jobs)
        finally:
            self.close()

    def _write_reports(self, result: RunResult, jobs: Iterable[Any]) -> None:
        from aoe.report.github import append_step_summary
        from aoe.report.junit import agent_models, write_junit

        models = agent_models(jobs)
        if self.options.junit is not None:
            try:
                write_junit(result, self.options.junit, models)
            except OSError as exc:
                print(
                    f"warning: cannot write --junit {self.options.junit}: {exc.strerror}",
                    file=self._warn,
                )
        try:
            append_step_summary(result, self._environ, models)
        except OSError as exc:
            print(f"warning: cannot append to GITHUB_STEP_SUMMARY: {exc.strerror}", file=self._warn)
        if self.metrics is not None and self.options.pushgateway:
            try:
                self.metrics.push(self.options.pushgateway, run_id=result.run_id)
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
