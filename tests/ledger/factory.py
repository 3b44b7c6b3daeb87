"""Record builders for ledger tests: realistic values with only the interesting ones given."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from aoe.ledger.records import (
    AttemptEnd,
    AttemptStart,
    CallRecord,
    CallStart,
    RunStart,
    WorkflowStart,
)


def run_start(run_id: str = "run-1", **kw: Any) -> RunStart:
    fields: dict[str, Any] = {
        "started_at": time.time(),
        "command": "aoe run wf.yaml",
        "files": ("wf.yaml",),
        "simulate": True,
        "budget_usd": Decimal("1.25"),
    }
    fields.update(kw)
    return RunStart(run_id, **fields)


def workflow_start(run_id: str = "run-1", key: str = "invoice", **kw: Any) -> WorkflowStart:
    fields: dict[str, Any] = {
        "name": key.partition("#")[0],
        "path": "wf.yaml",
        "inputs": {"invoice_text": "ACME 12 USD"},
        "budget_usd": Decimal("0.5"),
    }
    fields.update(kw)
    return WorkflowStart(run_id, key, **fields)


def attempt_start(
    run_id: str = "run-1",
    key: str = "invoice",
    agent: str = "extract",
    attempt: int = 1,
    **kw: Any,
) -> AttemptStart:
    fields: dict[str, Any] = {
        "module": "accounts_payable",
        "model": "openai/gpt-4o-mini",
        "started_at": time.time(),
    }
    fields.update(kw)
    return AttemptStart(run_id, key, agent, attempt, **fields)


def call(
    run_id: str = "run-1",
    key: str = "invoice",
    agent: str = "extract",
    attempt: int = 1,
    *,
    turn: int = 1,
    cost: str | Decimal = "0.0001234",
    **kw: Any,
) -> CallRecord:
    now = time.time()
    fields: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 120,
        "output_tokens": 30,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": Decimal(cost),
        "cost_confirmed": True,
        "started_at": now,
        "ended_at": now + 0.25,
        "status": "ok",
        "request_id": "req_1",
        "tool_calls": (),
        "estimate_tokens": 900,
    }
    fields.update(kw)
    return CallRecord(run_id, key, agent, attempt, turn, **fields)


def attempt_end(
    run_id: str = "run-1",
    key: str = "invoice",
    agent: str = "extract",
    attempt: int = 1,
    state: Any = "COMPLETED",
    **kw: Any,
) -> AttemptEnd:
    fields: dict[str, Any] = {"ended_at": time.time(), "error": None, "output": None}
    fields.update(kw)
    return AttemptEnd(run_id, key, agent, attempt, state, **fields)


def call_start(
    run_id: str = "run-1",
    key: str = "invoice",
    agent: str = "extract",
    attempt: int = 1,
    *,
    turn: int = 1,
    reserved: str | Decimal = "0.0009",
) -> CallStart:
    return CallStart(
        run_id,
        key,
        agent,
        attempt,
        turn,
        "openai",
        "gpt-4o-mini",
        Decimal(reserved),
        1300,
        time.time(),
    )
