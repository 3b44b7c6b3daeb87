"""One provider call, inside its budget reservation and rate-limit permit.

    take a rate-limit permit -> reserve the worst-case cost -> record it as started
    -> call the provider -> settle the permit and the reservation
    -> (run the tools it asked for) -> record how it ended

The call's deadline is the provider's (``request.timeout_s``, enforced at the provider
boundary); what comes back here is a ``Completion`` or a ``ProviderError``. A call whose
outcome is unknown (timed out, cut off, cancelled in flight) may have been billed: its
tokens stay taken and its reservation becomes unconfirmed spend, so a budget still holds.
The call is in the ledger before its request leaves (spent at its reservation until it
ends), so even a process killed while it is in flight leaves that spend on record.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aoe.cost.budget import BudgetReservation
from aoe.cost.money import ZERO
from aoe.cost.tokens import budget_input_tokens, estimate_request
from aoe.engine.task import Attempt
from aoe.errors import (
    BudgetExceededError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    RateLimitClosedError,
    RateLimitedError,
    RateLimitKind,
)
from aoe.ledger.records import CallRecord, CallStart
from aoe.monitor.events import ApiCall, BudgetHit, RateLimitHit, ToolCalled
from aoe.providers.base import Completion, CompletionRequest, LLMClient, ToolCall, Usage
from aoe.ratelimit import Reservation
from aoe.retry import MAX_RETRY_AFTER_S
from aoe.services import Limiter
from aoe.tools import Toolbox, ToolResult, tool_log

#: What the ledger keeps of a turn's tool calls (see ``aoe.tools.tool_log``).
ToolLog = tuple[Mapping[str, Any], ...]

#: A rate-limit wait shorter than this is no wait worth an event.
_WAIT_WORTH_TELLING_S = 0.001


@dataclass(frozen=True, slots=True)
class Turn:
    """One provider call's answer and the results of the tool calls it asked for."""

    completion: Completion
    results: tuple[ToolResult, ...] = ()


@dataclass(slots=True)
class _Ticket:
    """What one call holds while it is out: its budget hold and its rate-limit permit."""

    provider: str
    limiter: Limiter
    hold: BudgetReservation
    permit: Reservation
    reserved_usd: Decimal
    reserved_tokens: int
    turn: int
    started_at: float  # wall clock, for the ledger
    started_mono: float  # monotonic, for the latency
    free: bool  # it cannot cost money: its start record need not be waited for


async def call(
    attempt: Attempt, request: CompletionRequest, turn: int = 1, *, tools: Toolbox | None = None
) -> Turn:
    """One provider call; with ``tools`` a ``complete_with_tools`` turn.

    Once the permit and reservation are settled, the tool calls the answer asked for are
    run (except on the agent's last allowed turn) before the call is recorded, so its
    ledger row holds them and their results.
    """
    rt, agent = attempt.rt, attempt.task.agent
    client = rt.clients.client_for(agent.model)
    ticket = await _take_ticket(attempt, request, client, turn)
    await _start(attempt, ticket)
    try:
        if tools is None:
            completion = await client.complete(request)
        else:
            completion = await client.complete_with_tools(request)
    except (ProviderError, ConfigError, asyncio.CancelledError) as raw:
        # ConfigError: the client refused the request as configured (a bad base_url)
        await asyncio.shield(_call_failed(attempt, ticket, raw))
        closed_for = raw.retry_after_s if isinstance(raw, RateLimitedError) else None
        if closed_for is not None and closed_for > MAX_RETRY_AFTER_S:  # the key is closed
            raise RateLimitClosedError(
                ticket.limiter.name, opens_at=rt.clock.wall() + closed_for, retry_after_s=closed_for
            ) from raw
        raise
    except Exception as raw:  # a client bug must not keep the reservation and the permit
        unexpected = ProviderError(
            f"the {client.name} client failed: {type(raw).__name__}: {raw}",
            provider=client.name,
            where=attempt.task.where,
            outcome_unknown=True,
            hint="this is a bug in the provider client; rerun with --debug for the traceback",
        )
        await asyncio.shield(_call_failed(attempt, ticket, unexpected))
        raise unexpected from raw
    last_turn = turn >= agent.max_turns
    not_run = f"not run: max_turns={agent.max_turns} reached" if last_turn else "not run: cancelled"
    if tools is None:  # settled and recorded here, with the scheduler's cancel held off
        guard = attempt.task.guard
        guard.held = True
        try:
            log = tool_log(completion.tool_calls, (), not_run=not_run)
            await _settle_and_record(attempt, ticket, completion, _ready(log))
        finally:
            guard.held = False
        if guard.deferred:  # cancelled meanwhile: now that it is recorded, stop
            guard.deferred = False
            current = asyncio.current_task()
            if current is not None:
                current.cancel()
            raise asyncio.CancelledError
        return Turn(completion)
    # With tools, one shielded task settles the call and records it, so it is settled and
    # in the ledger even if the agent is cancelled meanwhile (or mid-tool). The tools it
    # asked for run beside the settling; their log joins the record.
    logged: asyncio.Future[ToolLog] = asyncio.get_running_loop().create_future()
    after = asyncio.ensure_future(_settle_and_record(attempt, ticket, completion, logged))
    answer = Turn(completion)
    try:
        if completion.tool_calls and not last_turn:
            results = await _run_tools(attempt, tools, completion.tool_calls, turn)
            answer = Turn(completion, results)
    finally:
        logged.set_result(tool_log(completion.tool_calls, answer.results, not_run=not_run))
        await asyncio.shield(after)
    return answer


async def _ready(log: ToolLog) -> ToolLog:
    return log


async def _settle_and_record(
    attempt: Attempt, ticket: _Ticket, completion: Completion, logged: Awaitable[ToolLog]
) -> None:
    """Correct the permit, turn the reservation into the call's cost, count and record it.

    A server that reports no usage (some compatible servers) billed an unknown amount: the
    reservation stays spent, as unconfirmed, so a budget still holds against it. If
    settling fails, the call is recorded at its whole reservation, unconfirmed.
    """
    reported = completion.usage_reported
    cost, confirmed = ticket.reserved_usd, False  # what stands if settling fails
    try:
        used = completion.usage.total_tokens if reported else ticket.reserved_tokens
        await ticket.limiter.settle(ticket.permit, used)
        if completion.rate_limits is not None:
            await ticket.limiter.observe(completion.rate_limits)
        cost = await _settle_budget(attempt, ticket, completion.usage if reported else None)
        confirmed = reported
    finally:
        attempt.add_call(completion.usage, cost)
        await _record(
            attempt,
            ticket,
            completion.usage,
            cost,
            confirmed=confirmed,
            status="ok",
            request_id=completion.request_id,
            tool_calls=await logged,
        )


async def _take_ticket(
    attempt: Attempt, request: CompletionRequest, client: LLMClient, turn: int
) -> _Ticket:
    """Take the call's rate-limit permit, then reserve the most it can cost (or neither).

    The budget reserves an upper bound of what the provider can bill (exact tokens only
    where the endpoint is the model's own API); the limiter takes the best estimate: the
    exact count where it was made for the budget, else the byte estimate. The permit comes
    first so that money is held only for a call about to leave: a call still waiting for
    its turn holds none, and a process killed with agents queued on a rate limit leaves no
    reservation of theirs behind (on a shared Redis budget it would stay as unconfirmed
    spend until it expired). A call the budget refuses gives its permit back unsent.
    """
    rt, task = attempt.rt, attempt.task
    model, provider = task.agent.model, client.name
    limiter = rt.limiters.for_model(provider, model.name)
    own_api = rt.model_info(client, model.name).tokenizer is not None
    estimate = estimate_request(model, request, exact=own_api)
    bound = budget_input_tokens(estimate, request, own_api=own_api)
    price = rt.prices.max_cost_usd(model, bound, request.max_tokens)
    reserved = price or ZERO
    wait_started = rt.clock.now()
    permit = await limiter.acquire(
        estimate.total_tokens, timeout_s=rt.rate_limit_timeout_s, priority=task.agent.priority
    )
    try:
        hold = await rt.budgets.reserve(task.budget_scopes, reserved)
    except BaseException as err:  # refused or cancelled: the permit goes back, never used
        await asyncio.shield(limiter.release(permit))
        if isinstance(err, BudgetExceededError):
            rt.events.publish(
                BudgetHit(
                    attempt.envelope, rt.clock.wall(), scope=err.where or "", message=err.message
                )
            )
        raise
    now = rt.clock.now()
    if now - wait_started > _WAIT_WORTH_TELLING_S:
        rt.events.publish(
            RateLimitHit(
                attempt.envelope, rt.clock.wall(), limiter=limiter.name, waited_s=now - wait_started
            )
        )
    return _Ticket(
        provider,
        limiter,
        hold,
        permit,
        reserved,
        estimate.total_tokens,
        turn,
        started_at=rt.clock.wall(),
        started_mono=now,
        free=(price is not None and not price) or _sends_nothing(client),
    )


def _sends_nothing(client: LLMClient) -> bool:
    """Whether ``client`` is the built-in simulator, which answers in this process: its
    calls leave nothing to bill. (Not imported for this: a run without it never loads it.)"""
    sim = sys.modules.get("aoe.providers.sim")
    return sim is not None and isinstance(client, sim.SimulatorClient)


async def _start(attempt: Attempt, ticket: _Ticket) -> None:
    """Record the call as started (committed) before its request leaves.

    Its commit is also that of every write made before it (the attempt's start, and the
    results of the agents it needs). A call that cannot cost money (the simulator, a
    model priced at zero) only queues its start: a crash can lose nothing it paid for.
    If that write fails, or the agent is cancelled meanwhile, the request never leaves:
    the permit and the reservation are given back whole. A cancelled start may still be
    committed (a recorder writes what it was handed), so its call is ended at $0.
    """
    task = attempt.task
    start = CallStart(
        task.run_id,
        task.workflow_key,
        task.agent.id,
        attempt.number,
        ticket.turn,
        ticket.provider,
        str(task.agent.model),
        ticket.reserved_usd,
        ticket.reserved_tokens,
        ticket.started_at,
    )
    try:
        await attempt.rt.recorder.start_call(start, wait=not ticket.free)
    except BaseException as stopped:
        cancelled = isinstance(stopped, asyncio.CancelledError)
        await asyncio.shield(_never_sent(attempt, ticket, type(stopped).__name__, cancelled))
        raise


async def _never_sent(attempt: Attempt, ticket: _Ticket, why: str, recorded: bool) -> None:
    """Give back what a call that never left holds; end its started record, if any, at $0."""
    rt = attempt.rt
    await ticket.limiter.release(ticket.permit)
    await rt.budgets.release(ticket.hold)
    if not recorded:
        return
    task = attempt.task
    ended = CallRecord(
        task.run_id,
        task.workflow_key,
        task.agent.id,
        attempt.number,
        ticket.turn,
        ticket.provider,
        str(task.agent.model),
        0,
        0,
        0,
        0,
        0,
        ZERO,
        True,
        ticket.started_at,
        rt.clock.wall(),
        why,
        estimate_tokens=ticket.reserved_tokens,
    )
    # a ledger that fails here leaves the row started, counted at its reservation (the
    # safe side); the error that stopped the call is the one the caller raises
    with contextlib.suppress(Exception):
        await rt.recorder.record_call(ended)


async def _call_failed(attempt: Attempt, ticket: _Ticket, raw: BaseException) -> None:
    """Settle and record a call that did not answer.

    A call whose outcome is unknown (timed out, cut off, cancelled in flight) may have
    been billed: its tokens stay taken and its reservation becomes unconfirmed spend. A
    request that never left (refused by the client as configured, or its connection
    never made) gives its permit and its reservation back whole. A 429 is told to the
    limiter before the permit is settled, and published.
    """
    error = raw if isinstance(raw, ProviderError) else None
    usage = error.usage if error is not None else None
    never_sent = isinstance(raw, ConfigError) or (
        isinstance(raw, ProviderConnectionError) and not raw.outcome_unknown
    )
    unknown = not never_sent and (error.outcome_unknown if error is not None else True)
    if error is not None and error.limited is not None:
        await ticket.limiter.note_429(ticket.permit, error.limited, error.retry_after_s)
        _publish_429(attempt, ticket, error, error.limited)
    if never_sent:
        await ticket.limiter.release(ticket.permit)
    else:
        spent_tokens = ticket.reserved_tokens if unknown else 0
        await ticket.limiter.settle(ticket.permit, usage.total_tokens if usage else spent_tokens)
    cost = await _settle_budget(attempt, ticket, usage, unknown=unknown)
    attempt.add_call(usage or Usage(), cost)
    await _record(
        attempt,
        ticket,
        usage or Usage(),
        cost,
        confirmed=not unknown,
        status=type(raw).__name__,
        request_id=None,
    )


def _publish_429(
    attempt: Attempt, ticket: _Ticket, error: ProviderError, kind: RateLimitKind
) -> None:
    """Every provider 429 is an event: the plain log, metrics and traces all see it."""
    rt = attempt.rt
    rt.events.publish(
        RateLimitHit(
            attempt.envelope,
            rt.clock.wall(),
            limiter=ticket.limiter.name,
            waited_s=0.0,
            provider_429=True,
            provider=ticket.provider,
            model=str(attempt.task.agent.model),
            limited=kind,
            retry_after_s=error.retry_after_s,
        )
    )


async def _settle_budget(
    attempt: Attempt, ticket: _Ticket, usage: Usage | None, *, unknown: bool = True
) -> Decimal:
    """Turn a reservation into spend: the true cost, or all of it when the outcome is unknown.

    ``usage`` None with ``unknown`` is a call that may have been billed (no usage came
    back); without ``unknown`` it is one that surely was not (released whole).
    """
    rt = attempt.rt
    if usage is not None:
        cost = rt.prices.cost_usd(attempt.task.agent.model, usage) or ZERO
        call = attempt.where if ticket.turn == 1 else f"{attempt.where} turn {ticket.turn}"
        await rt.budgets.settle(ticket.hold, cost, confirmed=True, call=call)
        return cost
    if unknown:
        await rt.budgets.settle(ticket.hold, ticket.reserved_usd, confirmed=False)
        return ticket.reserved_usd
    await rt.budgets.release(ticket.hold)
    return ZERO


async def _run_tools(
    attempt: Attempt, tools: Toolbox, calls: Sequence[ToolCall], turn: int
) -> tuple[ToolResult, ...]:
    """Run one turn's tool calls concurrently and publish a ``ToolCalled`` for each."""
    results = await tools.run_all(calls)
    rt = attempt.rt
    for tool_call, result in zip(calls, results, strict=True):
        rt.events.publish(
            ToolCalled(
                attempt.envelope,
                rt.clock.wall(),
                turn=turn,
                tool=tool_call.name,
                ok=not result.is_error,
                duration_s=result.duration_s,
                result_chars=len(result.content),
                truncated=result.truncated,
            )
        )
    return results


async def _record(
    attempt: Attempt,
    ticket: _Ticket,
    usage: Usage,
    cost: Decimal,
    *,
    confirmed: bool,
    status: str,
    request_id: str | None,
    tool_calls: ToolLog = (),
) -> None:
    """Publish the call and write it to the ledger (before the agent can be reported done)."""
    rt, task = attempt.rt, attempt.task
    ended_at = rt.clock.wall()
    model = str(task.agent.model)
    rt.events.publish(
        ApiCall(
            attempt.envelope,
            ended_at,
            provider=ticket.provider,
            model=model,
            usage=usage,
            cost_usd=cost,
            latency_s=rt.clock.now() - ticket.started_mono,
            status=status,
            cost_confirmed=confirmed,
            turn=ticket.turn,
        )
    )
    await rt.recorder.record_call(
        CallRecord(
            run_id=task.run_id,
            workflow_key=task.workflow_key,
            agent_id=task.agent.id,
            attempt=attempt.number,
            turn=ticket.turn,
            provider=ticket.provider,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=cost,
            cost_confirmed=confirmed,
            started_at=ticket.started_at,
            ended_at=ended_at,
            status=status,
            request_id=request_id,
            tool_calls=tool_calls,
            estimate_tokens=ticket.reserved_tokens,
        )
    )
