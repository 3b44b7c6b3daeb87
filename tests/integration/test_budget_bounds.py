"""Budgets hold whatever the provider counts: 200 randomized runs against a loopback server
that counts tokens its own way (characters/4, bytes, or tiktoken), never billed past a budget.

Each run draws its agents (1 to 120, up to 200 in flight), prompts (ASCII, accented, CJK
and emoji text of 10 to 3,000 characters), max tokens, how much of them the server bills
as output, and its budgets (the run's, the workflow's, some agents'), sized from a
fraction of what the run would cost to many times it. The provider is an
OpenAI-compatible server behind its own base_url, so aoe cannot know how it counts: what
it reserves must be a bound. What the server billed is computed from the requests it
received, the way it bills them, independently of anything aoe recorded.
"""

from __future__ import annotations

import math
import random
import sqlite3
import statistics
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.app.prepare import RunOptions, prepare
from aoe.app.run import RunHandle
from aoe.cost.money import from_pusd
from aoe.engine.results import AgentState, RunResult
from tests.fakeprovider import FakeProvider, Fault, _prompt_tokens, fake_provider

INPUT_PER_MTOK = Decimal("2.5")
OUTPUT_PER_MTOK = Decimal("10")
COUNTINGS = ("chars/4", "bytes", "tiktoken")
ALPHABET = "abcdefghij klmnopqrstuvwxyz ABCDEF 0123456789 .,;:!? éèàüöß ñ 中文字符 日本語 😀🚀 "
RUNS = 200

__all__ = ["fake_provider"]  # the loopback server fixture
CHUNKS = 8


def _text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(size)).strip() or "x"


def _billed(request_body: dict[str, object], counting: str, fill: float) -> Decimal:
    """What the server bills one request: its own input count, ``fill`` of max tokens."""
    cap = int(request_body.get("max_completion_tokens") or request_body.get("max_tokens") or 16)  # type: ignore[call-overload]
    output = max(1, min(cap, math.ceil(cap * fill)))
    tokens_in = _prompt_tokens(request_body, counting)
    return (tokens_in * INPUT_PER_MTOK + output * OUTPUT_PER_MTOK) / 1_000_000


def _write_run(
    rng: random.Random, tmp: Path, server: FakeProvider, index: int
) -> tuple[Path, Path, dict[str, Decimal], Decimal]:
    """A workflow of random agents and its config; its agent limits; its expected cost.

    The workflow's own ``budget_usd`` line is left as ``BUDGET`` for the caller to fill."""
    agents = rng.choice([rng.randint(1, 8), rng.randint(10, 60), rng.randint(80, 120)])
    max_tokens = rng.choice([16, 64, 200, 400])
    limits: dict[str, Decimal] = {}
    lines = [
        "version: 1",
        f"name: run{index}",
        "BUDGET",
        "defaults:",
        "  model: compat/any-model",
        f"  max_tokens: {max_tokens}",
        "  retry: {max_retries: 0}",
        "allow_partial_completion: true",
        "max_failure_rate: 1",
        "agents:",
    ]
    expected = Decimal(0)
    for n in range(agents):
        prompt = _text(rng, rng.choice([10, 200, 1000, 3000]))
        lines += [f"  a{n}:", "    prompt: |", f"      agent a{n}: {prompt}"]
        rough = (len(prompt.encode()) * INPUT_PER_MTOK + max_tokens * OUTPUT_PER_MTOK) / 10**6
        expected += rough
        if rng.random() < 0.2:
            limits[f"a{n}"] = (rough * Decimal(rng.choice(["0.3", "0.8", "1.5", "3"]))).quantize(
                Decimal("0.000001")
            )
            lines.append(f"    cost_limit_usd: {limits[f'a{n}']}")
    workflow = tmp / f"run{index}.yaml"
    workflow.write_text("\n".join(lines) + "\n", encoding="utf-8")  # BUDGET filled later
    config = tmp / f"aoe{index}.yaml"
    config.write_text(
        "providers:\n"
        f"  compat: {{type: openai, base_url: '{server.openai_base_url}'}}\n"
        "pricing:\n"
        f"  compat/any-model: {{input_per_mtok: {INPUT_PER_MTOK}, "
        f"output_per_mtok: {OUTPUT_PER_MTOK}}}\n",
        encoding="utf-8",
    )
    return workflow, config, limits, expected


async def _one_run(
    rng: random.Random, tmp: Path, server: FakeProvider, index: int, *, counting: str = ""
) -> tuple[float, RunResult]:
    """One randomized run; asserts no budget was passed; returns spend / the tightest budget.

    The server counts tokens as ``counting`` says, else a way drawn at random."""
    server.counting = counting or rng.choice(COUNTINGS)
    fill = rng.choice([0.1, 0.5, 1.0])
    server.output_fill = fill
    workflow, config, agent_limits, expected = _write_run(rng, tmp, server, index)
    def draw() -> Decimal:
        share = Decimal(rng.choice(["0.05", "0.2", "0.5", "0.9", "2", "10"]))
        return (expected * share).quantize(Decimal("0.000001"))

    budget, flow_budget = draw(), draw() if rng.random() < 0.5 else None
    text = workflow.read_text(encoding="utf-8")
    line = f"budget_usd: {flow_budget}" if flow_budget is not None else "# no workflow budget"
    workflow.write_text(text.replace("BUDGET", line, 1), encoding="utf-8")
    first = len(server.requests)
    options = RunOptions(
        files=(workflow,),
        config_path=config,
        budget_usd=budget,
        max_parallel=rng.choice([1, 4, 20, 200]),
        use_ledger=False,
    )
    result = await RunHandle(prepare(options)).execute()
    by_agent: dict[str, Decimal] = defaultdict(Decimal)
    for request in server.requests[first:]:
        body = request.body
        assert isinstance(body, dict)
        content = body["messages"][-1]["content"]
        agent_id = content.split(":", 1)[0].removeprefix("agent ")
        by_agent[agent_id] += _billed(body, server.counting, fill)
    billed = sum(by_agent.values(), Decimal(0))
    assert billed <= budget, f"run {index}: billed {billed} > --budget {budget}"
    if flow_budget is not None:
        assert billed <= flow_budget, f"run {index}: billed {billed} > budget_usd {flow_budget}"
    tightest = min(budget, flow_budget) if flow_budget is not None else budget
    for agent_id, limit in agent_limits.items():
        assert by_agent[agent_id] <= limit, f"run {index}: {agent_id} billed past {limit}"
    assert abs(result.cost_usd - billed) < Decimal("0.000000001"), "ledger != provider's bill"
    states = [a.state for w in result.workflows for a in w.agents.values()]
    if AgentState.BUDGET_EXCEEDED in states:
        assert result.exit_code == 3
    else:
        assert result.exit_code == 0
    return float(billed / tightest), result


@pytest.mark.timeout(120)
@pytest.mark.parametrize("chunk", range(CHUNKS))
async def test_no_budget_is_passed_whatever_the_provider_counts(
    chunk: int, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    """25 randomized runs each (200 in all): the server never bills past any budget."""
    rng = random.Random(f"budget-bounds-{chunk}")
    used = []
    for index in range(RUNS // CHUNKS):
        utilisation, _ = await _one_run(rng, tmp_path, fake_provider, chunk * 100 + index)
        used.append(utilisation)
    assert max(used) <= 1.0
    assert statistics.median(used) > 0.0  # the runs spent something: the test bit


FAULTS = (
    Fault.drop,  # billed, then the connection is cut: the answer is lost
    lambda: Fault.rate_limit(retry_after_ms="5"),
    lambda: Fault.error(500),
    Fault.ok,
    Fault.ok,
)


@pytest.mark.timeout(120)
async def test_faults_never_pass_a_budget_and_the_ledger_covers_the_bill(
    fake_provider: FakeProvider, tmp_path: Path
) -> None:
    """24 randomized runs in which the server drops answers it billed, refuses calls with
    429s and fails with 500s: it never bills past a budget, and the ledger holds what it
    billed as confirmed spend plus, as unconfirmed, at least what it billed unseen."""
    rng = random.Random("budget-bounds-faults")
    unseen = Decimal(0)
    for index in range(24):
        server = fake_provider
        server.counting = rng.choice(COUNTINGS)
        server.output_fill = rng.choice([0.1, 0.5, 1.0])
        workflow, config, _, expected = _write_run(rng, tmp_path, server, 1000 + index)
        text = workflow.read_text(encoding="utf-8").replace("BUDGET", "# no workflow budget")
        text = text.replace(
            "retry: {max_retries: 0}",
            "retry: {max_retries: 3, strategy: constant, base_delay_s: 0.001, jitter: false}",
        )
        workflow.write_text(text, encoding="utf-8")
        server.script(*(rng.choice(FAULTS)() for _ in range(rng.randint(5, 60))))
        budget = (expected * Decimal(rng.choice(["0.2", "0.6", "1.5"]))).quantize(
            Decimal("0.000001")
        )
        db = tmp_path / f"faults{index}.db"
        first_bill = len(server.billed)
        options = RunOptions(
            files=(workflow,),
            config_path=config,
            db_path=db,
            budget_usd=budget,
            max_parallel=rng.choice([1, 8, 64]),
        )
        result = await RunHandle(prepare(options)).execute()
        server.unscript()  # faults left over do not leak into the next run
        billed = sum(
            (
                (b.input_tokens * INPUT_PER_MTOK + b.output_tokens * OUTPUT_PER_MTOK) / 10**6
                for b in server.billed[first_bill:]
            ),
            Decimal(0),
        )
        assert billed <= budget, f"run {index}: billed {billed} > --budget {budget}"
        with sqlite3.connect(db) as ledger:
            confirmed, unconfirmed = (
                from_pusd(v or 0)
                for v in ledger.execute(
                    "SELECT SUM(CASE WHEN cost_confirmed THEN cost_pusd ELSE 0 END),"
                    " SUM(CASE WHEN cost_confirmed THEN 0 ELSE cost_pusd END) FROM calls"
                ).fetchone()
            )
        assert confirmed <= billed <= confirmed + unconfirmed, f"run {index}"
        assert confirmed + unconfirmed == result.cost_usd
        assert confirmed + unconfirmed <= budget
        assert result.exit_code in (0, 1, 3, 4), result.exit_code
        unseen += unconfirmed
    assert unseen > 0  # answers were dropped after billing: the test bit
