"""The ``--json`` result document of a run, described by ``schemas/result.schema.json``.

Money is an exact decimal string (``"0.0000765"``), as in every JSON document aoe writes.
"""

from __future__ import annotations

from typing import Any

from aoe.cost.money import decimal_text as _usd
from aoe.engine.results import AgentResult, AttemptResult, RunResult, WorkflowResult
from aoe.providers.base import Usage
from aoe.report.ledger_docs import iso as _iso
from aoe.report.ledger_docs import json_bytes
from aoe.spec.models import thaw

DOCUMENT_VERSION = 2


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def _attempt(a: AttemptResult) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "state": a.state.value,
        "started_at": _iso(a.started_at),
        "ended_at": _iso(a.ended_at),
        "duration_s": round(a.ended_at - a.started_at, 6),
        "usage": _usage(a.usage),
        "cost_usd": _usd(a.cost_usd),
        "error": a.error,
        "error_type": a.error_type,
    }


def _agent(a: AgentResult) -> dict[str, Any]:
    return {
        "state": a.state.value,
        "resumed": a.resumed,
        "attempts": [_attempt(x) for x in a.attempts],
        "started_at": _iso(a.started_at),
        "ended_at": _iso(a.ended_at),
        "duration_s": round(a.duration_s, 6),
        "usage": _usage(a.usage),
        "cost_usd": _usd(a.cost_usd),
        "error": a.error,
        "output": thaw(a.output),
    }


def _workflow(w: WorkflowResult) -> dict[str, Any]:
    return {
        "key": w.key,
        "name": w.name,
        "path": w.path,
        "state": w.state.value,
        "exit_code": w.state.exit_code,
        "reason": w.reason,
        "started_at": _iso(w.started_at),
        "ended_at": _iso(w.ended_at),
        "duration_s": round(w.ended_at - w.started_at, 6),
        "usage": _usage(w.usage),
        "cost_usd": _usd(w.cost_usd),
        "inputs": thaw(w.inputs),
        "agents": {agent_id: _agent(a) for agent_id, a in w.agents.items()},
    }


def run_document(result: RunResult) -> dict[str, Any]:
    """Everything a machine needs to know about a run, as JSON-ready data."""
    counts: dict[str, int] = {}
    for w in result.workflows:
        counts[w.state.value] = counts.get(w.state.value, 0) + 1
    return {
        "version": DOCUMENT_VERSION,
        "run_id": result.run_id,
        "state": result.state.value,
        "exit_code": result.exit_code,
        "simulate": result.simulate,
        "started_at": _iso(result.started_at),
        "ended_at": _iso(result.ended_at),
        "duration_s": round(result.ended_at - result.started_at, 6),
        "usage": _usage(result.usage),
        "cost_usd": _usd(result.cost_usd),
        "workflow_counts": counts,
        "workflows": [_workflow(w) for w in result.workflows],
    }


def result_json(result: RunResult) -> bytes:
    """The result document as UTF-8 JSON (``aoe run --json``), bytes as they are written
    to stdout: a run of 10,000 agents makes 11 MB of it, not to be copied as text too."""
    return json_bytes(run_document(result))
