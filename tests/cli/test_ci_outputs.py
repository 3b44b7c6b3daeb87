"""A CI job's view: ``aoe run --junit --json --events`` with a GitHub step summary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import xmlschema

from tests.report.workflow_data import write_workflow

ROOT = Path(__file__).resolve().parents[2]


def _example_without_waits(tmp: Path) -> Path:
    """The README example (with its agents/, tools/ and data/) and its simulated latencies
    at 0: what a CI job gets does not depend on how long the agents take, and the real
    process cannot be given a fake clock, so it would sleep 4 s for nothing."""
    shutil.copytree(ROOT / "workflows", tmp / "workflows")
    path = tmp / "workflows" / "invoice-processing.yaml"
    text, waits = re.subn(r"\blatency_s: [0-9.]+", "latency_s: 0", path.read_text("utf-8"))
    assert waits == 5, "the example's simulate: blocks changed; update this test"
    path.write_text(text, encoding="utf-8")
    return path


def test_ci_run_writes_junit_summary_events_and_json(tmp_path: Path) -> None:
    """Exit code, a valid JUnit file, a summary with the cost table, JSON that parses."""
    if (ROOT / "workflows" / "invoice-processing.yaml").exists():
        workflow = _example_without_waits(tmp_path)
    else:
        workflow = write_workflow(tmp_path)
    summary = tmp_path / "summary.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true",
           "GITHUB_STEP_SUMMARY": str(summary), "AOE_DB": str(tmp_path / "aoe.db")}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    done = subprocess.run(
        [sys.executable, "-m", "aoe", "run", str(workflow), "--simulate", "--junit",
         "results.xml", "--json", "--events", "ev.jsonl"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    document = json.loads(done.stdout)
    assert done.returncode == document["exit_code"]
    assert done.returncode in (0, 4)
    xmlschema.XMLSchema(ROOT / "tests" / "data" / "junit.xsd").validate(tmp_path / "results.xml")
    text = summary.read_text(encoding="utf-8")
    assert f"## aoe run `{document['run_id']}` (simulated)" in text
    assert "### Cost" in text
    assert "| **total** |" in text
    schema = json.loads((ROOT / "aoe" / "schemas" / "events.schema.json").read_text("utf-8"))
    lines = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text("utf-8").splitlines()]
    for record in lines:
        jsonschema.validate(record, schema)
    assert lines[0]["kind"] == "run_started"
    assert lines[-1]["kind"] == "run_finished"
    assert lines[-1]["exit_code"] == done.returncode
