"""The tool loop end to end: `aoe run` against the loopback provider, both wire formats."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aoe.cli.main import main
from aoe.cost.money import to_pusd
from tests.fakeprovider import ANTHROPIC_PATH, FakeProvider, fake_provider
from tests.tools.specs import module_name

__all__ = ["fake_provider"]

WIRES = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-haiku-4-5"}
TOOLS_SOURCE = '''
import asyncio

def lookup(name):
    return {"vendor": name, "approved": name.startswith("ACME")}

def broken():
    raise RuntimeError("vendor master is offline")

async def slow():
    await asyncio.sleep(5)
    return "late"
'''


def _workflow(tmp: Path, server: FakeProvider, model: str, *, max_turns: int = 8) -> Path:
    module = module_name("looptools")
    (tmp / f"{module}.py").write_text(TOOLS_SOURCE)
    (tmp / "aoe.yaml").write_text(
        "providers:\n"
        "  openai: {type: openai, api_key_env: OPENAI_API_KEY,\n"
        f"           base_url: '{server.openai_base_url}'}}\n"
        "  anthropic: {type: anthropic, api_key_env: ANTHROPIC_API_KEY,\n"
        f"              base_url: '{server.base_url}'}}\n"
        "pricing:\n"
        "  openai/gpt-4o-mini: {input_per_mtok: 1.0, output_per_mtok: 2.0}\n"
        "  anthropic/claude-haiku-4-5: {input_per_mtok: 1.0, output_per_mtok: 2.0}\n"
    )
    path = tmp / "wf.yaml"
    path.write_text(
        "version: 1\nname: loop\n"
        "defaults:\n  max_tokens: 50\n  timeout_s: 5\n"
        "  retry: {max_retries: 2, strategy: constant, base_delay_s: 0.01, jitter: false}\n"
        "agents:\n"
        f"  check:\n    model: {model}\n    prompt: Is ACME approved?\n"
        f"    tools: [lookup_vendor, broken, slow]\n    max_turns: {max_turns}\n"
        "tools:\n"
        "  lookup_vendor:\n    description: Look a vendor up\n"
        "    parameters: {type: object, required: [name], properties: {name: {type: string}}}\n"
        f"    python: {module}:lookup\n"
        f"  broken:\n    description: Always fails\n    python: {module}:broken\n"
        f"  slow:\n    description: Too slow\n    python: {module}:slow\n    timeout_s: 0.2\n"
    )
    return path


def _run(tmp: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["run", str(path), "--json", "--no-live", "--events", str(tmp / "ev.jsonl")])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _tool_results(server: FakeProvider, index: int) -> list[tuple[str, str, bool]]:
    """(call id, content, is_error) of the tool results sent in request ``index``, either wire."""
    request = server.requests[index]
    messages = request.body["messages"]
    if request.path == ANTHROPIC_PATH:
        blocks = messages[-1]["content"]
        return [(b["tool_use_id"], b["content"] if isinstance(b["content"], str)
                 else "".join(p["text"] for p in b["content"]), bool(b.get("is_error")))
                for b in blocks if b["type"] == "tool_result"]
    results = []
    for m in reversed(messages):
        if m["role"] != "tool":
            break
        results.insert(0, (m["tool_call_id"], m["content"], m["content"].startswith("error:")))
    return results


def _ledger(tmp: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(tmp / "aoe-test.db")
    db.row_factory = sqlite3.Row
    return db.execute("select * from calls order by turn").fetchall()


@pytest.fixture(params=sorted(WIRES))
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs once per wire format, with keys set for both."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-loop")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-loop")
    return str(request.param)


def test_a_tool_call_round_trip(wire: str, fake_provider: FakeProvider, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """The model asks for a lookup, gets its result by call id, then answers; two calls recorded."""
    fake_provider.script_tools([("lookup_vendor", {"name": "ACME"})], [])
    code, doc = _run(tmp_path, _workflow(tmp_path, fake_provider, WIRES[wire]), capsys)
    assert code == 0
    assert doc["workflows"][0]["agents"]["check"]["state"] == "COMPLETED"
    assert len(fake_provider.requests) == 2
    offered = fake_provider.requests[0].body["tools"]
    assert len(offered) == 3
    [(call_id, content, failed)] = _tool_results(fake_provider, 1)
    assert json.loads(content) == {"vendor": "ACME", "approved": True}
    assert not failed
    assert call_id.startswith(("call_", "toolu_"))
    rows = _ledger(tmp_path)
    assert [r["turn"] for r in rows] == [1, 2]
    [logged] = json.loads(rows[0]["tool_calls"])
    assert (logged["name"], logged["ok"], json.loads(logged["arguments"])) == (
        "lookup_vendor", True, {"name": "ACME"})
    assert json.loads(rows[1]["tool_calls"]) == []
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    [tool_event] = [e for e in events if e["kind"] == "tool_called"]
    assert (tool_event["tool"], tool_event["ok"], tool_event["turn"]) == ("lookup_vendor", True, 1)
    assert "ACME" not in json.dumps(tool_event)


def test_parallel_failing_and_invalid_calls_all_go_back_to_the_model(
    wire: str, fake_provider: FakeProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One turn asks for four calls; a raise, a timeout and bad arguments come back as errors."""
    fake_provider.script_tools(
        [("lookup_vendor", {"name": "ACME"}), ("broken", {}), ("slow", {}),
         ("lookup_vendor", {"name": 42})],
        [],
    )
    code, _ = _run(tmp_path, _workflow(tmp_path, fake_provider, WIRES[wire]), capsys)
    assert code == 0
    results = _tool_results(fake_provider, 1)
    assert [r[2] for r in results] == [False, True, True, True]
    assert "RuntimeError: vendor master is offline" in results[1][1]
    assert "slow did not finish within timeout_s=0.2" in results[2][1]
    assert "invalid arguments for lookup_vendor: at name: 42 is not of type 'string'" in (
        results[3][1])
    assert len({r[0] for r in results}) == 4
    logged = json.loads(_ledger(tmp_path)[0]["tool_calls"])
    assert [e["ok"] for e in logged] == [True, False, False, False]


def test_max_turns_reached_fails_the_agent_without_a_retry(
    wire: str, fake_provider: FakeProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model that never stops calling tools fails at max_turns, with the reason, exit 1."""
    lookup = [("lookup_vendor", {"name": "ACME"})]
    fake_provider.script_tools(lookup, lookup, lookup)
    code, doc = _run(tmp_path, _workflow(tmp_path, fake_provider, WIRES[wire], max_turns=2),
                     capsys)
    assert code == 1
    agent = doc["workflows"][0]["agents"]["check"]
    assert agent["state"] == "FAILED"
    assert len(agent["attempts"]) == 1
    assert "max_turns=2" in agent["attempts"][0]["error"]
    assert len(fake_provider.requests) == 2
    rows = _ledger(tmp_path)
    assert [r["turn"] for r in rows] == [1, 2]
    [unrun] = json.loads(rows[1]["tool_calls"])
    assert unrun["result"] == "not run: max_turns=2 reached"


def test_a_three_turn_agent_costs_exactly_its_three_calls(
    wire: str, fake_provider: FakeProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each turn is charged on its own usage; the agent's cost is their sum, to the picodollar."""
    lookup = [("lookup_vendor", {"name": "ACME"})]
    fake_provider.script_tools(lookup, lookup, [])
    code, doc = _run(tmp_path, _workflow(tmp_path, fake_provider, WIRES[wire]), capsys)
    assert code == 0
    served = [json.loads(body)["usage"] for body in fake_provider.responses]
    assert len(served) == 3
    rows = _ledger(tmp_path)
    assert [r["turn"] for r in rows] == [1, 2, 3]
    expected = Decimal(0)
    for row, usage in zip(rows, served, strict=True):
        tokens_in = usage.get("prompt_tokens", usage.get("input_tokens"))
        tokens_out = usage.get("completion_tokens", usage.get("output_tokens"))
        assert (row["input_tokens"], row["output_tokens"]) == (tokens_in, tokens_out)
        cost = (Decimal(tokens_in) * 1 + Decimal(tokens_out) * 2) / Decimal(1_000_000)
        assert row["cost_pusd"] == to_pusd(cost)
        expected += cost
    agent = doc["workflows"][0]["agents"]["check"]
    assert Decimal(str(agent["cost_usd"])) == expected
    assert sum(r["cost_pusd"] for r in rows) == to_pusd(expected)
    assert len(_tool_results(fake_provider, 2)) == 1
