"""The files a finished run leaves for CI: ``--junit`` and the GitHub step summary.

A file that cannot be written is a warning, never a failed run: the exit code stays the
run's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from aoe.engine.results import RunResult
from aoe.engine.scheduler import WorkflowJob
from aoe.report.github import append_step_summary
from aoe.report.junit import agent_models, write_junit


def write_run_reports(
    result: RunResult,
    jobs: Iterable[WorkflowJob],
    *,
    junit: Path | None,
    warn: TextIO,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Write ``junit`` (if asked for) and, on GitHub Actions, append the step summary."""
    models = agent_models(jobs)
    if junit is not None:
        try:
            write_junit(result, junit, models)
        except OSError as exc:
            print(f"warning: cannot write --junit {junit}: {exc.strerror}", file=warn)
    try:
        append_step_summary(result, environ, models)
    except OSError as exc:
        print(f"warning: cannot append to GITHUB_STEP_SUMMARY: {exc.strerror}", file=warn)
