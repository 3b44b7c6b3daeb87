"""`aoe run` end to end against a real loopback server speaking the providers' wire formats."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aoe.cli.main import main
from tests.fakeprovider import ANTHROPIC_PATH, OPENAI_PATH, FakeProvider, Fault, fake_provider

__all__ = ["fake_provider"]

SECRET = "sk-test-SECRET-123"


def _write(tmp: Path, server: FakeProvider, agents: str, *, extra: str = "") -> Path:
    (tmp / "aoe.yaml").write_text(
        "providers:\n"
        "  openai: {type: openai, api_key_env: OPENAI_API_KEY,"
        f" base_url: '{server.openai_base_url}'}}\n"
        "  anthropic: {type: anthropic, api_key_env: ANTHROPIC_API_KEY,"
        f" base_url: '{server.base_url}'}}\n"
    )
    path = tmp / "wf.yaml"
    path.write_text(
        "version: 1\nname: loop\n"
        + extra
        + "defaults:\n  model: openai/gpt-4o-mini\n  max_tokens: 50\n  timeout_s: 5\n"
        "  retry: {max_retries: 3, strategy: constant, base_delay_s: 0.01, jitter: false}\n"
        "agents:\n" + agents
    )
    return path


def _run(
    tmp: Path, path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any], str]:
    events = tmp / "events.jsonl"
    code = main(["run", str(path), "--json", "--no-live", "--events", str(events), *args])
    out = capsys.readouterr()
    doc = json.loads(out.out) if out.out.strip().startswith("{") else {}
    return code, doc, out.out + out.err


def _events(tmp: Path, kind: str) -> list[dict[str, Any]]:
    lines = (tmp / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(
    ("fault", "path"),
    [
        (Fault.rate_limit(retry_after_ms="30"), OPENAI_PATH),
        (Fault.error(500), OPENAI_PATH),
        (Fault.error(503), OPENAI_PATH),
        (Fault.overloaded(), ANTHROPIC_PATH),
        (Fault.drop(), OPENAI_PATH),
        (Fault.truncated(), ANTHROPIC_PATH),
        (Fault.missing_fields(), OPENAI_PATH),
    ],
)
def test_retriable_faults_are_retried_until_the_agent_completes(
    fault: Fault,
    path: str,
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 429/5xx/529/dropped/garbled answer costs one more attempt, then the run completes."""
    model = "anthropic/claude-haiku-4-5" if path == ANTHROPIC_PATH else "openai/gpt-4o-mini"
    wf = _write(tmp_path, fake_provider, f"  a:\n    model: {model}\n    prompt: hi\n")
    fake_provider.script(fault, path=path)
    code, doc, _ = _run(tmp_path, wf, capsys)
    assert code == 0
    agent = doc["workflows"][0]["agents"]["a"]
    assert agent["state"] == "COMPLETED"
    first = "RATE_LIMITED" if fault.kind == "rate_limit" else "FAILED"  # why it failed
    assert [a["state"] for a in agent["attempts"]] == [first, "COMPLETED"]
    assert fake_provider.calls(path) == 2
    retries = _events(tmp_path, "agent_retrying")
    assert len(retries) == 1
    expected = 0.03 if fault.kind == "rate_limit" else 0.01
    assert retries[0]["delay_s"] == pytest.approx(expected)


@pytest.mark.usefixtures("keys")
def test_a_hang_longer_than_the_timeout_is_retried_and_its_cost_kept_unconfirmed(
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A call that times out may have been billed: it is retried and its reservation kept."""
    # the first call is never answered, so only its deadline ends it; the deadline leaves
    # the answered retry a second, ample for a loopback call on a loaded machine
    wf = _write(tmp_path, fake_provider, "  a:\n    prompt: hi\n    timeout_s: 1.0\n")
    fake_provider.script(Fault.silent())
    code, doc, _ = _run(tmp_path, wf, capsys)
    assert code == 0
    attempts = doc["workflows"][0]["agents"]["a"]["attempts"]
    assert attempts[0]["error_type"] == "ProviderTimeout"
    assert Decimal(attempts[0]["cost_usd"]) > 0
    db = sqlite3.connect(tmp_path / "aoe-test.db")
    confirmed = [r[0] for r in db.execute("select cost_confirmed from calls order by started_at")]
    assert confirmed == [0, 1]


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.unauthorized(echo_key=True), "AuthenticationError"),
        (Fault.error(400), "BadRequestError"),
        (Fault.insufficient_quota(), "QuotaExceededError"),
    ],
)
def test_permanent_faults_fail_at_once_and_never_leak_the_key(
    fault: Fault,
    error_type: str,
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """401, 400 and insufficient_quota are one call, FAILED, exit 1; the key is nowhere."""
    wf = _write(
        tmp_path, fake_provider, "  a:\n    prompt: hi\n  b:\n    needs: [a]\n    prompt: hi\n"
    )
    fake_provider.script(fault)
    code, doc, output = _run(tmp_path, wf, capsys)
    assert code == 1
    wf_doc = doc["workflows"][0]
    assert wf_doc["state"] == "FAILED"
    assert wf_doc["agents"]["a"]["attempts"][0]["error_type"] == error_type
    assert wf_doc["agents"]["b"]["state"] == "SKIPPED"
    assert fake_provider.calls() == 1
    assert SECRET not in output
    assert SECRET.encode() not in (tmp_path / "aoe-test.db").read_bytes()
    assert SECRET not in (tmp_path / "events.jsonl").read_text()


def test_a_missing_key_is_exit_2_naming_the_variable(
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No key: nothing is called, exit 2, the message names the variable and --simulate."""
    wf = _write(tmp_path, fake_provider, "  a:\n    prompt: hi\n")
    code = main(["run", str(wf), "--no-live"])
    err = capsys.readouterr().err
    assert code == 2
    assert "OPENAI_API_KEY" in err
    assert "--simulate" in err
    assert fake_provider.calls() == 0


@pytest.mark.usefixtures("keys")
def test_both_wire_formats_in_one_workflow_with_structured_output(
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """OpenAI and Anthropic agents hand structured output downstream; tokens are recorded."""
    agents = (
        "  extract:\n    prompt: Extract the vendor.\n"
        "    output_schema: {type: object, required: [vendor],"
        " properties: {vendor: {type: string}}}\n"
        "  check:\n    model: anthropic/claude-haiku-4-5\n    needs: [extract]\n"
        "    prompt: 'Is {{ agents.extract.output.vendor }} approved?'\n"
    )
    wf = _write(tmp_path, fake_provider, agents)
    code, doc, _ = _run(tmp_path, wf, capsys)
    assert code == 0
    agents_doc = doc["workflows"][0]["agents"]
    vendor = agents_doc["extract"]["output"]["vendor"]
    assert isinstance(vendor, str)
    sent = fake_provider.requests[-1].body
    assert vendor in json.dumps(sent["messages"])
    assert fake_provider.requests[0].body["response_format"]["type"] == "json_schema"
    assert all(a["usage"]["input_tokens"] > 0 for a in agents_doc.values())
    assert Decimal(doc["cost_usd"]) > 0


@pytest.mark.usefixtures("keys")
def test_a_429_with_retry_after_pauses_the_key_for_every_agent(
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After a 429 with retry-after, no agent of that key calls again before the pause ends."""
    (tmp_path / "aoe.yaml").write_text(
        "providers:\n"
        "  openai: {type: openai, api_key_env: OPENAI_API_KEY,"
        f" base_url: '{fake_provider.openai_base_url}',"
        " limits: {concurrent_requests: 1}}\n"
    )
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "version: 1\nname: pause\ndefaults:\n  model: openai/gpt-4o-mini\n"
        "  retry: {max_retries: 2, strategy: immediate}\n"
        "agents:\n  a: {prompt: one}\n  b: {prompt: two}\n  c: {prompt: three}\n"
    )
    fake_provider.script(Fault.rate_limit(retry_after="1"))
    code, _, _ = _run(tmp_path, wf, capsys)
    assert code == 0
    db = sqlite3.connect(tmp_path / "aoe-test.db")
    calls = db.execute(
        "select status, started_at, ended_at from calls order by started_at"
    ).fetchall()
    assert [c[0] for c in calls] == ["RateLimitedError", "ok", "ok", "ok"]
    limited_at = calls[0][2]
    assert all(started >= limited_at + 0.95 for _, started, _ in calls[1:])


@pytest.mark.usefixtures("keys")
def test_an_answer_without_usage_keeps_its_reservation_as_unconfirmed_spend(
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that reports no usage cannot slip past a budget: the call costs its worst case,
    marked unconfirmed."""
    wf = _write(tmp_path, fake_provider, "  a:\n    prompt: hi\n", extra="budget_usd: 1\n")
    body = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ]
    }
    fake_provider.script(Fault.reply(body))
    code, doc, _ = _run(tmp_path, wf, capsys)
    assert code == 0
    assert Decimal(doc["cost_usd"]) > 0
    db = sqlite3.connect(tmp_path / "aoe-test.db")
    assert db.execute("select cost_confirmed, cost_pusd > 0 from calls").fetchall() == [(0, 1)]


@pytest.mark.usefixtures("keys")
def test_an_answer_that_repeats_the_key_is_recorded_without_it(
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server or proxy that echoes the key in its answer cannot plant it in the outputs."""
    wf = _write(
        tmp_path,
        fake_provider,
        "  a:\n    prompt: hi\n  b:\n    needs: [a]\n    prompt: 'Check {{ agents.a.output }}'\n",
    )
    body = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"your key is {SECRET}"},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5},
    }
    fake_provider.script(Fault.reply(body))
    code, doc, output = _run(tmp_path, wf, capsys)
    assert code == 0
    assert doc["workflows"][0]["agents"]["a"]["output"] == "your key is ***"
    assert SECRET not in output
    assert SECRET.encode() not in (tmp_path / "aoe-test.db").read_bytes()
    assert SECRET not in json.dumps(fake_provider.requests[-1].body)
