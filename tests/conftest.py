"""Fixtures every test gets: no API keys, and a ledger that is never the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Remove every ``*_API_KEY`` variable and point the ledger at a temporary file."""
    for name in list(os.environ):
        if name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AOE_DB", str(tmp_path / "aoe-test.db"))
    monkeypatch.delenv("AOE_DEBUG", raising=False)



# A skipped test fails the suite. Everything the tests need is in the `test` extra, and
# .ci/run installs chromium, so a skip means something is broken (a dependency missing, an
# import failing) while the summary would still read as passed. The tests therefore import
# what they need plainly and call pytest.fail where a skip used to be; this plugin catches
# any skip that remains or comes back, names each with its reason at the end of the run,
# and makes the exit code 1. An expected failure (xfail) is not a skip.
class _SkipsFailTheSuite:
    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def _note(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.skipped.append((report.nodeid, reason))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.skipped and session.exitstatus in (
            pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.skipped:
            return
        terminalreporter.section("skipped tests fail the suite", red=True, bold=True)
        for nodeid, reason in self.skipped:
            terminalreporter.line(f"{nodeid}: {reason}", red=True)
        terminalreporter.line(
            "everything the tests need comes with pip install -e '.[test]' (and chromium, "
            "which .ci/run installs): a skip means something is missing or broken"
        )


def pytest_configure(config: pytest.Config) -> None:
    """Any skipped test fails the run (see above)."""
    config.pluginmanager.register(_SkipsFailTheSuite(), "aoe-skips-fail-the-suite")
