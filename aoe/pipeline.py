"""One agent's execution, as a readable sequence of steps.

    render prompt -> reserve budget -> acquire rate limit -> call provider
    -> settle cost and limits -> record the call -> validate output -> hand it downstream

A failed attempt goes to the retry policy (``aoe.retry.decide``), which says whether and
when to try again. Every call that came back is in the ledger before the agent is
reported done; a call whose outcome is unknown (timed out or cut off after sending) keeps
its budget reservation as unconfirmed spend.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from aoe.engine.results import AgentResult, AgentState, AttemptResult
from aoe.errors import (
    AoeError,
    BudgetExceededError,
    OutputValidationError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    RateLimitTimeoutError,
)
from aoe.monitor.events import AgentRetrying, AgentStarted, ApiCall, BudgetHit, RateLimitHit
from aoe.providers.base import Completion, CompletionRequest, Message, Usage
from aoe.runtime import Runtime
from aoe.spec.models import AgentSpec, WorkflowSpec, thaw


@dataclass(frozen=True, slots=True)
class AgentTask:
    """Everything one agent execution needs from the engine."""

    run_id: str
    workflow_key: str
    workflow: WorkflowSpec
    agent: AgentSpec
    inputs: Mapping[str, Any]
    upstream: Mapping[str, Mapping[str, Any]]
    env: Mapping[str, str] = field(default_factory=dict)
    budget_scopes: tuple[Any, ...] = ()
    first_attempt: int = 1

    @property
    def where(self) -> str:
        return f"{self.workflow_key}/{self.agent.id}"


@dataclass(frozen=True, slots=True)
class _Attempt:
    result: AttemptResult
    output: Any = None
    error: AoeError | None = None


def final_state(error: AoeError) -> AgentState:
    """The agent state an error leaves behind once no retry is left."""
    if isinstance(error, BudgetExceededError):
        return AgentState.BUDGET_EXCEEDED
    if isinstance(error, RateLimitedError | RateLimitTimeoutError):
        return AgentState.RATE_LIMITED
    return AgentState.FAILED


async def run_agent(task: AgentTask, rt: Runtime) -> AgentResult:
    """Run one agent to a final state, retrying what failed for a retriable reason."""
    from aoe.retry import decide

    attempts: list[AttemptResult] = []
    attempt = task.first_attempt
    started = time.time()
    while True:
        outcome = await _run_attempt(task, rt, attempt)
        attempts.append(outcome.result)
        if outcome.error is None:
            return AgentResult(
                task.agent.id, AgentState.COMPLETED, tuple(attempts), outcome.output,
                started_at=started, ended_at=time.time(),
            )
        error = outcome.error
        decision = decide(
            error,
            attempt=attempt - task.first_attempt + 1,
            spec=task.agent.retry,
            rng=rt.rng(task.workflow_key, task.agent.id, attempt),
        )
        if not decision.retry:
            return AgentResult(
                task.agent.id, final_state(error), tuple(attempts),
                error=str(error), started_at=started, ended_at=time.time(),
            )
        rt.events.publish(AgentRetrying(
            run_id=task.run_id, workflow=task.workflow_key, agent=task.agent.id,
            attempt=attempt, error=str(error), delay_s=decision.delay_s,
        ))
        await rt.clock.sleep(decision.delay_s)
        attempt += 1


async def _run_attempt(task: AgentTask, rt: Runtime, attempt: int) -> _Attempt:
    agent = task.agent
    started = time.time()
    rt.events.publish(AgentStarted(
        run_id=task.run_id, workflow=task.workflow_key, agent=agent.id, attempt=attempt,
        model=str(agent.model), module=agent.module,
    ))
    ledger = rt.ledger
    if ledger is not None:
        from aoe.ledger.records import AttemptStart

        await ledger.start_attempt(AttemptStart(
            task.run_id, task.workflow_key, agent.id, attempt, agent.module,
            str(agent.model), started,
        ))
    calls: list[tuple[Usage, Decimal]] = []
    try:
        request = build_request(task, attempt)
        completion = await _call(task, rt, request, attempt, calls)
        output = parse_output(agent, completion.text, where=task.where)
    except AoeError as error:
        if error.where is None:
            error.where = f"{task.where}#{attempt}"
        state = final_state(error) if not error.retriable else AgentState.FAILED
        await _finish(task, rt, attempt, state, error=error)
        return _Attempt(_attempt_result(attempt, state, started, calls, error), error=error)
    except asyncio.CancelledError:
        await asyncio.shield(_finish(task, rt, attempt, AgentState.CANCELLED, error=None))
        raise
    await _finish(task, rt, attempt, AgentState.COMPLETED, output=output)
    return _Attempt(_attempt_result(attempt, AgentState.COMPLETED, started, calls), output)


def _attempt_result(
    attempt: int,
    state: AgentState,
    started: float,
    calls: list[tuple[Usage, Decimal]],
    error: AoeError | None = None,
) -> AttemptResult:
    usage = Usage()
    cost = Decimal(0)
    for u, c in calls:
        usage = usage + u
        cost += c
    return AttemptResult(
        attempt, state, started, time.time(), usage, float(cost),
        error=str(error) if error else None,
        error_type=type(error).__name__ if error else None,
    )


async def _finish(
    task: AgentTask,
    rt: Runtime,
    attempt: int,
    state: AgentState,
    *,
    error: AoeError | None = None,
    output: Any = None,
) -> None:
    if rt.ledger is None:
        return
    from aoe.ledger.records import AttemptEnd

    await rt.ledger.finish_attempt(AttemptEnd(
        task.run_id, task.workflow_key, task.agent.id, attempt, state.value, time.time(),
        str(error) if error else None, output,
    ))


def render_context(task: AgentTask) -> dict[str, Any]:
    """What a prompt template sees: inputs, upstream outputs, ``with`` values, opted-in env."""
    return {
        "inputs": task.inputs,
        "agents": task.upstream,
        "with": task.agent.with_values,
        "env": task.env,
        "workflow": {"name": task.workflow.name},
    }


def build_request(task: AgentTask, attempt: int) -> CompletionRequest:
    """Render the agent's templates into one provider request."""
    from aoe.spec.templates import render

    agent = task.agent
    context = render_context(task)
    prompt = render(agent.prompt, context, where=f"{task.where} prompt")
    system = render(agent.system, context, where=f"{task.where} system") if agent.system else None
    return CompletionRequest(
        model=agent.model.name,
        messages=(Message("user", prompt),),
        max_tokens=agent.max_tokens,
        system=system,
        temperature=agent.temperature,
        output_schema=agent.output_schema,
        schema_name=_schema_name(agent.id),
        timeout_s=agent.timeout_s,
        simulate=agent.simulate,
        attempt=attempt,
        trace_id=f"{task.workflow_key}/{agent.id}",
    )


def _schema_name(agent_id: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in agent_id)[:64] or "output"


async def _call(
    task: AgentTask,
    rt: Runtime,
    request: CompletionRequest,
    attempt: int,
    calls: list[tuple[Usage, Decimal]],
    turn: int = 1,
) -> Completion:
    """One provider call inside its budget reservation and rate-limit permit."""
    from aoe.cost.tokens import estimate_request

    agent = task.agent
    model = agent.model
    client = rt.clients.client_for(model)
    estimate = estimate_request(model, request)
    reserved = rt.prices.max_cost_usd(model, estimate.input_tokens, request.max_tokens) or Decimal(0)
    budget_hold = None
    if rt.budgets is not None:
        try:
            budget_hold = rt.budgets.reserve(task.budget_scopes, reserved)
        except BudgetExceededError as err:
            rt.events.publish(BudgetHit(
                run_id=task.run_id, workflow=task.workflow_key, agent=agent.id,
                scope=str(getattr(err, "scope", "") or err.where or ""), message=err.message,
            ))
            raise
    limiter = rt.limiters.for_model(client.name, model.name)
    wait_started = rt.clock.now()
    try:
        permit = await limiter.acquire(
            estimate.input_tokens + request.max_tokens,
            timeout_s=rt.rate_limit_timeout_s,
            priority=agent.priority,
        )
    except BaseException:
        if budget_hold is not None:
            rt.budgets.release(budget_hold)
        raise
    waited = rt.clock.now() - wait_started
    if waited > 0.001:
        rt.events.publish(RateLimitHit(
            run_id=task.run_id, workflow=task.workflow_key, agent=agent.id,
            limiter=limiter.name, waited_s=waited,
        ))
    started = time.time()
    try:
        async with asyncio.timeout(request.timeout_s):
            completion = await client.complete(request)
    except (ProviderError, TimeoutError, asyncio.CancelledError) as raw:
        error = raw
        if isinstance(raw, TimeoutError):
            error = ProviderTimeout(
                f"no answer within timeout_s={request.timeout_s}",
                provider=client.name, where=task.where, outcome_unknown=True,
                hint="raise timeout_s for this agent, or check the provider's status",
            )
        usage = error.usage if isinstance(error, ProviderError) else None
        unknown = isinstance(raw, asyncio.CancelledError) or (
            isinstance(error, ProviderError) and error.outcome_unknown
        )
        limiter.settle(permit, usage.total_tokens if usage else (
            estimate.input_tokens + request.max_tokens if unknown else 0))
        if isinstance(error, RateLimitedError):
            limiter.note_429()
            if error.retry_after_s:
                limiter.pause(error.retry_after_s)
        cost = _settle_budget(rt, budget_hold, model, usage, reserved, unknown)
        record = _record(task, rt, request, attempt, turn, client.name, usage or Usage(),
                         cost, not unknown, started, type(error).__name__, None)
        if isinstance(raw, asyncio.CancelledError):
            await asyncio.shield(record)
            raise
        await record
        calls.append((usage or Usage(), cost))
        if isinstance(raw, TimeoutError):
            raise error from raw
        raise
    limiter.settle(permit, completion.usage.total_tokens)
    if completion.rate_limits is not None:
        limiter.observe(completion.rate_limits)
    cost = _settle_budget(rt, budget_hold, model, completion.usage, reserved, False)
    await _record(task, rt, request, attempt, turn, client.name, completion.usage, cost, True,
                  started, "ok", completion.request_id)
    calls.append((completion.usage, cost))
    return completion


def _settle_budget(
    rt: Runtime,
    hold: Any,
    model: Any,
    usage: Usage | None,
    reserved: Decimal,
    unknown: bool,
) -> Decimal:
    """Turn a reservation into spend: the true cost, or all of it when the outcome is unknown."""
    if usage is not None:
        cost = rt.prices.cost_usd(model, usage) or Decimal(0)
        if hold is not None:
            rt.budgets.settle(hold, cost, confirmed=True)
        return cost
    if unknown:
        if hold is not None:
            rt.budgets.settle(hold, reserved, confirmed=False)
        return reserved
    if hold is not None:
        rt.budgets.release(hold)
    return Decimal(0)


async def _record(
    task: AgentTask,
    rt: Runtime,
    request: CompletionRequest,
    attempt: int,
    turn: int,
    provider: str,
    usage: Usage,
    cost: Decimal,
    confirmed: bool,
    started: float,
    status: str,
    request_id: str | None,
) -> None:
    ended = time.time()
    rt.events.publish(ApiCall(
        run_id=task.run_id, workflow=task.workflow_key, agent=task.agent.id, attempt=attempt,
        provider=provider, model=str(task.agent.model), usage=usage, cost_usd=float(cost),
        latency_s=ended - started, status=status, cost_confirmed=confirmed, turn=turn,
    ))
    if rt.ledger is None:
        return
    from aoe.ledger.records import CallRecord

    await rt.ledger.record_call(CallRecord(
        run_id=task.run_id, workflow_key=task.workflow_key, agent_id=task.agent.id,
        attempt=attempt, turn=turn, provider=provider, model=str(task.agent.model),
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens, cost_usd=cost, cost_confirmed=confirmed,
        started_at=started, ended_at=ended, status=status, request_id=request_id,
        tool_calls=(), estimate_tokens=None,
    ))


@lru_cache(maxsize=1024)
def _validator_for(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json))


def parse_output(agent: AgentSpec, text: str, *, where: str) -> Any:
    """The agent's output: parsed and validated JSON with ``output_schema``, else the text."""
    if agent.output_schema is None:
        return text
    body = _strip_fences(text)
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise OutputValidationError(
            f"answer is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            where=where, hint="the model ignored the output schema; it will be retried",
            text=text,
        ) from None
    validator = _validator_for(json.dumps(thaw(agent.output_schema), sort_keys=True))
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise OutputValidationError(
            f"answer does not match output_schema at {path}: {error.message}",
            where=where, hint="the model's answer broke the schema; it will be retried",
            text=text,
        )
    return value


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        first_newline = stripped.find("\n")
        if first_newline != -1 and stripped.endswith("```"):
            return stripped[first_newline + 1 : -3].strip()
    return stripped
