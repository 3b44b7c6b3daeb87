"""`aoe run` as users call it: the JSON document, many instances, several files, signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aoe.app.prepare import RunOptions, prepare
from aoe.app.run import RunHandle
from aoe.cli.main import main
from aoe.clock import FakeClock
from aoe.report.result import run_document

ROOT = Path(__file__).resolve().parents[2]
RESULT_SCHEMA = json.loads((ROOT / "schemas" / "result.schema.json").read_text())


def _json_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["run", *args, "--json", "--no-live"])
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, RESULT_SCHEMA)
    return code, doc


def test_example_runs_simulated_and_the_document_matches_its_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's first command: exit 0, every agent completed, outputs and cost present.

    Run as ``aoe run --simulate --json`` runs it (prepare, RunHandle, run_document), on a
    fake clock: the example's simulated latencies (4 s on its critical path) take no time.
    """
    options = RunOptions(files=(ROOT / "workflows" / "invoice-processing.yaml",), simulate=True)
    result = asyncio.run(RunHandle(prepare(options), clock=FakeClock(autojump=True)).execute())
    doc = json.loads(json.dumps(run_document(result), default=str))
    jsonschema.validate(doc, RESULT_SCHEMA)
    assert doc["exit_code"] == result.exit_code == 0
    workflow = doc["workflows"][0]
    assert workflow["state"] == "COMPLETED"
    assert {a["state"] for a in workflow["agents"].values()} == {"COMPLETED"}
    assert isinstance(workflow["agents"]["extract"]["output"], dict)
    assert Decimal(doc["cost_usd"]) > 0
    assert main(["runs", "--json"]) == 0
    assert doc["run_id"] in capsys.readouterr().out


def _flaky(tmp: Path, name: str, fail: bool) -> Path:
    path = tmp / f"{name}.yaml"
    simulate = "{fail_times: 1, fail_with: bad_request}" if fail else "{latency_s: 0}"
    path.write_text(
        f"version: 1\nname: {name}\ninputs:\n  invoice: {{type: string}}\n"
        "  amount: {type: number, default: 0}\n"
        "agents:\n  check:\n    model: sim/fast\n    prompt: 'Check {{ inputs.invoice }}'\n"
        f"    simulate: {simulate}\n"
    )
    return path


def test_each_row_is_an_instance_with_its_own_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--each FILE.jsonl and .csv run one instance per row; the row is its inputs."""
    wf = _flaky(tmp_path, "ap", fail=False)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"invoice": f"INV-{i}", "amount": i}) + "\n" for i in range(5))
    )
    code, doc = _json_run(capsys, str(wf), "--each", str(rows), "--max-workflows", "2")
    assert code == 0
    assert [w["key"] for w in doc["workflows"]] == [f"ap#{i}" for i in range(1, 6)]
    assert [w["inputs"] for w in doc["workflows"]][2] == {"invoice": "INV-2", "amount": 2}
    table = tmp_path / "rows.csv"
    table.write_text("invoice,amount\nINV-A,10.5\nINV-B,7\n")
    code, doc = _json_run(capsys, str(wf), "--each", str(table))
    assert code == 0
    assert [w["inputs"]["amount"] for w in doc["workflows"]] == [10.5, 7]


def test_a_bad_row_is_exit_2_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row whose value has the wrong type stops the run before anything is spent."""
    wf = _flaky(tmp_path, "ap", fail=False)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"invoice": "INV-1"}\n{"invoice": "INV-2", "amount": "lots"}\n')
    assert main(["run", str(wf), "--each", str(rows), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert "row 2" in err
    assert "amount" in err


def test_several_files_exit_with_the_worst_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One workflow completes, one fails: each has its own outcome and the exit code is 1."""
    good, bad = _flaky(tmp_path, "good", fail=False), _flaky(tmp_path, "bad", fail=True)
    code, doc = _json_run(capsys, str(good), str(bad), "--input", "invoice=INV-9")
    assert code == 1
    assert {w["key"]: w["state"] for w in doc["workflows"]} == {
        "good": "COMPLETED",
        "bad": "FAILED",
    }
    assert doc["workflow_counts"] == {"COMPLETED": 1, "FAILED": 1}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_within_2_seconds_with_exit_130(
    sig: signal.Signals, tmp_path: Path
) -> None:
    """Ctrl-C or SIGTERM: in-flight calls are cancelled and recorded, the summary printed, 130."""
    wf = tmp_path / "slow.yaml"
    wf.write_text(
        "version: 1\nname: slow\nagents:\n"
        "  a: {model: sim/slow, prompt: one, simulate: {latency_s: 30}}\n"
        "  b: {model: sim/slow, prompt: two, simulate: {latency_s: 30}}\n"
        "  c: {model: sim/slow, prompt: three, needs: [a]}\n"
    )
    db = tmp_path / "ledger.db"
    env = {**os.environ, "AOE_DB": str(db), "CI": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aoe", "run", str(wf), "--simulate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    started = 0
    while started < 2:
        line = proc.stderr.readline()
        assert line, "aoe ended before its agents started"
        started += "RUNNING" in line
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - sent < 2.0
    assert proc.returncode == 130
    assert "CANCELLED" in out
    assert "Traceback" not in err
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("select agent_id, state from attempts"))
        run_state = conn.execute("select state from runs").fetchone()[0]
        unended = conn.execute("select count(*) from calls where ended_at is null").fetchone()
        leases = conn.execute("select count(*) from leases").fetchone()
    assert states == {"a": "CANCELLED", "b": "CANCELLED"}
    assert run_state == "CANCELLED"
    assert unended == (0,)  # the calls in flight were ended, at their reservations
    assert leases == (0,)  # and the run's lease released: a --resume may start at once


def test_resume_reruns_agents_whose_spec_changed_and_what_they_fed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fix a prompt, resume: that agent and its dependents run again, the rest is reused."""
    wf = tmp_path / "wf.yaml"
    body = (
        "version: 1\nname: fix\nagents:\n"
        "  a: {model: sim/x, prompt: 'first {{ 1 }}'}\n"
        "  b: {model: sim/x, prompt: 'second', needs: [a]}\n"
        "  c: {model: sim/x, prompt: 'third'}\n"
        "  d: {model: sim/x, prompt: 'fourth', needs: [b, c], simulate: {fail_times: 9,"
        " fail_with: bad_request}}\n"
    )
    wf.write_text(body)
    code, doc = _json_run(capsys, str(wf))
    assert code == 1
    run_id = doc["run_id"]
    wf.write_text(
        body.replace("first", "FIRST").replace(
            ", simulate: {fail_times: 9, fail_with: bad_request}", ""
        )
    )
    code = main(["run", "--resume", run_id, "--json", "--no-live"])
    out = capsys.readouterr()
    assert code == 0
    agents = json.loads(out.out)["workflows"][0]["agents"]
    assert {a: v["resumed"] for a, v in agents.items()} == {
        "a": False,
        "b": False,
        "c": True,
        "d": False,
    }
    assert "a, b changed since they completed" in out.err


def test_resume_refuses_files_and_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run resumes with what it started with: new files or inputs are bad input."""
    wf = _flaky(tmp_path, "ap", fail=False)
    code = main(["run", str(wf), "--resume", "abc", "--input", "invoice=1", "--no-live"])
    assert code == 2
    assert "--resume takes no workflow files" in capsys.readouterr().err


def test_a_real_run_cannot_be_resumed_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated answers never mix into a run that called real providers."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-real")
    (tmp_path / "aoe.yaml").write_text(
        "providers:\n  openai: {type: openai, api_key_env: OPENAI_API_KEY,"
        " base_url: 'http://127.0.0.1:9/v1'}\n"
    )
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "version: 1\nname: real\nagents:\n  a: {model: openai/gpt-4o-mini, prompt: hi,"
        " retry: {max_retries: 0}}\n"
    )
    code, doc = _json_run(capsys, str(wf))
    assert code == 1
    assert main(["run", "--resume", doc["run_id"], "--simulate", "--no-live"]) == 2
    assert "without --simulate" in capsys.readouterr().err


def test_a_workflow_may_not_hand_an_api_key_to_its_prompts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`env: [OPENAI_API_KEY]` is refused before anything runs: keys never reach a prompt."""
    wf = tmp_path / "leak.yaml"
    wf.write_text(
        "version: 1\nname: leak\nenv: [OPENAI_API_KEY]\nagents:\n"
        "  a: {model: sim/x, prompt: 'key {{ env.OPENAI_API_KEY }}'}\n"
    )
    assert main(["run", str(wf), "--simulate", "--no-live"]) == 2
    assert "API key" in capsys.readouterr().err


def test_a_config_beside_another_file_is_not_silently_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files from two folders: the aoe.yaml beside the second one is named as unread."""
    first = _flaky(tmp_path, "one", fail=False)
    other = tmp_path / "other"
    other.mkdir()
    second = _flaky(other, "two", fail=False)
    (other / "aoe.yaml").write_text("providers: {}\n")
    code = main(["run", str(first), str(second), "--simulate", "--no-live", "-i", "invoice=1"])
    assert code == 0
    assert f"{other / 'aoe.yaml'} is not read" in capsys.readouterr().err


@pytest.mark.parametrize("budget", ["0", "-1", "nan", "inf", "ten"])
def test_a_budget_that_is_no_positive_amount_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], budget: str
) -> None:
    """--budget takes a positive amount of dollars; anything else is bad input, exit 2."""
    wf = _flaky(tmp_path, "ap", fail=False)
    assert main(["run", str(wf), "--simulate", "--budget", budget, "--no-live"]) == 2
    assert "--budget must be an amount greater than 0" in capsys.readouterr().err


def test_the_budget_is_kept_digit_for_digit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget typed with more digits than a float holds reaches the ledger unchanged."""
    wf = _flaky(tmp_path, "ap", fail=False)
    budget = "1234567.123456789012"
    args = ["run", str(wf), "--simulate", "--budget", budget, "-i", "invoice=1", "--json"]
    assert main([*args, "--no-live"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["show", run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["budget_usd"] == budget


def test_a_large_run_logs_summaries_not_a_line_per_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CI log of 300 agents holds summary lines and the run's own lines, no agent lines,
    and the --json document on stdout still lists every agent."""
    agents = "".join(f"  a{i:03d}:\n    prompt: 'Say {i}.'\n" for i in range(300))
    wf = tmp_path / "big.yaml"
    wf.write_text(
        "version: 1\nname: big\ndefaults: {model: sim/fast, simulate: {latency_s: 0}}\n"
        "agents:\n" + agents
    )
    code = main(
        ["run", str(wf), "--simulate", "--json", "--no-live", "--db", str(tmp_path / "l.db")]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert len(json.loads(out)["workflows"][0]["agents"]) == 300
    assert "big/a" not in err  # no agent's own line: none failed
    assert err.splitlines()[-1].endswith(
        "300 of 300 agents done (300 completed), 0 running, $0.0000"
    )
    assert "big: COMPLETED (300 completed)" in err
