"""``aoe report --html``: a self-contained page checked in a real headless chromium."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from playwright import sync_api

from aoe.ledger.store import Ledger
from aoe.report.timeline import critical_path
from tests.report.workflow_data import write_workflow

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]


def _aoe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # no *_API_KEY even where the autouse fixture has not run yet (module-scoped fixtures)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"PYTHONPATH": str(ROOT), "CI": "1"})
    return subprocess.run([sys.executable, "-m", "aoe", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _chromium() -> str:
    """The system's chromium on PATH (Debian: chromium, Ubuntu: chromium-browser); playwright's
    own browser download is never used. Missing, the test fails: a skip would hide it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found is not None:
            return found
    pytest.fail("chromium is not on PATH: install it (.ci/run runs apt-get install chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A simulated run (a retry, a failure, a skip) and its report page, made once: the
    tests only read them."""
    tmp_path = tmp_path_factory.mktemp("report")
    db = tmp_path / "aoe.db"
    run = _aoe("run", str(write_workflow(tmp_path)), "--simulate", "--db", str(db), "--json",
               cwd=tmp_path)
    assert run.returncode == 4, run.stderr
    import json

    run_id = json.loads(run.stdout)["run_id"]
    page = tmp_path / "out" / "report.html"
    made = _aoe("report", run_id[:6], "--html", str(page), "--db", str(db), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return page, run_id, db


def test_page_is_self_contained(report: tuple[Path, str, Path]) -> None:
    """No script, style, image or font is fetched from anywhere: it opens offline."""
    html = report[0].read_text(encoding="utf-8")
    for needle in ("http://", "https://", "src=", "<link", "@import"):
        assert needle not in html


def test_critical_path_follows_the_stored_graph(report: tuple[Path, str, Path]) -> None:
    """The DAG's edges come from the ledger, and the critical path is a chain of needs."""
    _, run_id, db = report
    with Ledger.open(db) as ledger:
        wf = ledger.get_run(run_id).workflows[0]
    assert wf.needs["report"] == ("match", "reconcile")
    path = critical_path(wf)
    assert path[0] == "extract"
    assert all(a in wf.needs.get(b, ()) for a, b in itertools.pairwise(path))


def test_report_in_headless_chromium(report: tuple[Path, str, Path], tmp_path: Path) -> None:
    """Chromium loads the page with no console error or failed request; figures match."""
    chromium = _chromium()
    page_path, run_id, db = report
    with Ledger.open(db) as ledger:
        detail = ledger.get_run(run_id)
    errors: list[str] = []
    failed: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(page_path.as_uri())
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            total = page.get_attribute("#total-cost", "data-usd")
            rows = page.eval_on_selector_all(
                "#agents-table tbody tr",
                "rs => rs.map(r => [r.dataset.agent, r.dataset.state, r.dataset.usd,"
                " r.querySelector('td.cost').textContent])")
            nodes = page.eval_on_selector_all(
                "svg.dag g.node", "ns => ns.map(n => [n.dataset.agent, n.dataset.state])")
            waits = page.locator("svg.gantt rect.seg-wait").count()
            attempts = page.locator("svg.gantt g.attempt").count()
            page.locator("#agents-table th", has_text="cost").click()  # the sort script runs
            sorted_states = page.eval_on_selector_all(
                "#agents-table tbody tr", "rs => rs.map(r => r.dataset.usd)")
        finally:
            browser.close()
    assert errors == []
    assert failed == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert Decimal(total or "x") == detail.run.cost_usd
    agents = {a.agent_id: a for a in detail.workflows[0].agents}
    assert {r[0]: (r[1], Decimal(r[2])) for r in rows} == {
        a.agent_id: (a.state, a.cost_usd) for a in agents.values()}
    assert {r[1] for r in rows} >= {"COMPLETED", "FAILED"}
    assert dict(nodes)["report"] == "SKIPPED"
    assert attempts == sum(len(a.attempts) for a in agents.values())
    assert waits >= 1
    assert [Decimal(v) for v in sorted_states] == sorted(Decimal(v) for v in sorted_states)


def test_report_needs_an_output_path(tmp_path: Path) -> None:
    """`aoe report RUN_ID` without --html is a usage error (exit 2) with a hint."""
    done = _aoe("report", "abc", cwd=tmp_path)
    assert done.returncode == 2
    assert "--html" in done.stderr
