"""One agent's execution, as a readable sequence of steps.

    render prompt -> reserve budget -> acquire rate limit -> call provider
    -> settle cost and limits -> record the call -> validate output -> hand it downstream

An agent with ``tools`` repeats the middle steps once per model turn (``_tool_loop``):
each turn is its own call, with its own reservation, permit and ledger row, and the tool
calls it asked for run (concurrently) before that row is written, so it holds them and
their results. The loop ends at an answer without tool calls, or fails at ``max_turns``.

A failed attempt goes to the retry policy (``aoe.retry.decide``), which says whether and
when to try again. Every call that came back is in the ledger before the agent is
reported done; a call whose outcome is unknown (timed out or cut off after sending) keeps
its budget reservation as unconfirmed spend.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from aoe.engine.results import AgentResult, AgentState, AttemptResult
from aoe.errors import (
    AoeError,
    BudgetExceededError,
    OutputValidationError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    RateLimitTimeoutError,
    ToolError,
)
from aoe.monitor.events import (
    AgentRetrying,
    AgentStarted,
    ApiCall,
    BudgetHit,
    RateLimitHit,
    ToolCalled,
)
from aoe.providers.base import Completion, CompletionRequest, Message, ToolCall, Usage
from aoe.providers.json_api import wire_name
from aoe.engine.runtime import Limiter, Runtime
from aoe.spec.models import AgentSpec, WorkflowSpec, agent_fingerprint, thaw
from aoe.tools import Toolbox, ToolResult, result_message, tool_log

if TYPE_CHECKING:
    from aoe.ledger.records import AttemptState


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
    # Filled as attempts end, so an agent cancelled mid-attempt still reports them.
    attempts: list[AttemptResult] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.workflow_key}/{self.agent.id}"


@dataclass(frozen=True, slots=True)
class _Turn:
    """One provider call's answer and the results of the tool calls it asked for."""

    completion: Completion
    results: tuple[ToolResult, ...] = ()


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

    attempts = task.attempts
    attempt = task.first_attempt
    started = time.time()
    while True:
        outcome = await _run_attempt(task, rt, attempt)
        attempts.append(outcome.result)
        if outcome.error is None:
            return AgentResult(
                task.agent.id,
                AgentState.COMPLETED,
                tuple(attempts),
                outcome.output,
                started_at=started,
                ended_at=time.time(),
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
                task.agent.id,
                final_state(error),
                tuple(attempts),
                error=str(error),
                started_at=started,
                ended_at=time.time(),
            )
        rt.events.publish(
            AgentRetrying(
                run_id=task.run_id,
                workflow=task.workflow_key,
                agent=task.agent.id,
                attempt=attempt,
                error=str(error),
                delay_s=decision.delay_s,
            )
        )
        await rt.clock.sleep(decision.delay_s)
        attempt += 1


async def _run_attempt(task: AgentTask, rt: Runtime, attempt: int) -> _Attempt:
    agent = task.agent
    started = time.time()
    rt.events.publish(
        AgentStarted(
            run_id=task.run_id,
            workflow=task.workflow_key,
            agent=agent.id,
            attempt=attempt,
            model=str(agent.model),
            module=agent.module,
        )
    )
    calls: list[tuple[Usage, Decimal]] = []
    try:
        if rt.ledger is not None:
            from aoe.ledger.records import AttemptStart

            await rt.ledger.start_attempt(
                AttemptStart(
                    task.run_id,
                    task.workflow_key,
                    agent.id,
                    attempt,
                    agent.module,
                    str(agent.model),
                    started,
                    fingerprint=agent_fingerprint(agent),
                )
            )
        request = build_request(task, attempt)
        if agent.tools:
            completion = await _tool_loop(task, rt, request, attempt, calls)
        else:
            completion = (await _call(task, rt, request, attempt, calls)).completion
        output = parse_output(agent, completion.text, where=task.where)
    except AoeError as error:
        if error.where is None:
            error.where = f"{task.where}#{attempt}"
        state = final_state(error) if not error.retriable else AgentState.FAILED
        await _finish(task, rt, attempt, state, error=error)
        return _Attempt(_attempt_result(attempt, state, started, calls, error), error=error)
    except asyncio.CancelledError:
        task.attempts.append(_attempt_result(attempt, AgentState.CANCELLED, started, calls))
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
        attempt,
        state,
        started,
        time.time(),
        usage,
        float(cost),
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

    await rt.ledger.finish_attempt(
        AttemptEnd(
            task.run_id,
            task.workflow_key,
            task.agent.id,
            attempt,
            cast("AttemptState", state.value),
            time.time(),
            str(error) if error else None,
            output,
        )
    )


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
        schema_name=wire_name(agent.id, 64),
        timeout_s=agent.timeout_s,
        simulate=agent.simulate,
        attempt=attempt,
        trace_id=f"{task.workflow_key}/{agent.id}",
    )


async def _tool_loop(
    task: AgentTask,
    rt: Runtime,
    request: CompletionRequest,
    attempt: int,
    calls: list[tuple[Usage, Decimal]],
) -> Completion:
    """Turns of ``complete_with_tools`` until the model answers without asking for a tool."""
    max_turns = task.agent.max_turns
    async with _toolbox(task, rt) as toolbox:
        request = replace(request, tools=toolbox.definitions())
        messages = list(request.messages)
        for turn in range(1, max_turns + 1):
            asked = replace(request, messages=tuple(messages))
            answer = await _call(task, rt, asked, attempt, calls, turn, tools=toolbox)
            completion = answer.completion
            if not completion.tool_calls:
                return completion
            if turn == max_turns:
                break
            messages.append(Message("assistant", completion.text, completion.tool_calls))
            messages.extend(map(result_message, completion.tool_calls, answer.results))
    raise ToolError(
        f"the model still asked for tools after max_turns={max_turns} turns",
        hint="raise max_turns for this agent, or tell the model in the prompt when to answer",
    )


@asynccontextmanager
async def _toolbox(task: AgentTask, rt: Runtime) -> AsyncIterator[Toolbox]:
    """The agent's tools from the run's tool source, or (a library Runtime without one) its own."""
    if rt.tools is not None:
        yield await rt.tools.for_agent(task.workflow, task.agent)
        return
    toolbox = await Toolbox.open(task.workflow.tools[name] for name in task.agent.tools)
    try:
        yield toolbox
    finally:
        await toolbox.aclose()


async def _run_tools(
    task: AgentTask,
    rt: Runtime,
    tools: Toolbox,
    calls: Sequence[ToolCall],
    *,
    attempt: int,
    turn: int,
) -> tuple[ToolResult, ...]:
    """Run one turn's tool calls concurrently and publish a ``ToolCalled`` for each."""
    results = await tools.run_all(calls)
    for call, result in zip(calls, results, strict=True):
        rt.events.publish(
            ToolCalled(
                run_id=task.run_id,
                workflow=task.workflow_key,
                agent=task.agent.id,
                attempt=attempt,
                turn=turn,
                tool=call.name,
                ok=not result.is_error,
                duration_s=result.duration_s,
                result_chars=len(result.content),
                truncated=result.truncated,
            )
        )
    return results


@dataclass(slots=True)
class _Ticket:
    """What one call holds while it is out: its budget hold and its rate-limit permit."""

    provider: str
    limiter: Limiter
    hold: Any
    permit: Any
    reserved_usd: Decimal
    reserved_tokens: int
    attempt: int
    turn: int
    started: float = 0.0


async def _call(
    task: AgentTask,
    rt: Runtime,
    request: CompletionRequest,
    attempt: int,
    calls: list[tuple[Usage, Decimal]],
    turn: int = 1,
    *,
    tools: Toolbox | None = None,
) -> _Turn:
    """One provider call inside its budget reservation and rate-limit permit.

    With ``tools`` it is a ``complete_with_tools`` turn: once the permit and reservation
    are settled, the tool calls it asked for are run (except on the agent's last allowed
    turn) before the call is recorded, so its ledger row holds them and their results.
    """
    client = rt.clients.client_for(task.agent.model)
    ticket = await _take_ticket(task, rt, request, client.name, attempt, turn)
    try:
        async with asyncio.timeout(request.timeout_s):
            if tools is None:
                completion = await client.complete(request)
            else:
                completion = await client.complete_with_tools(request)
    except (ProviderError, TimeoutError, asyncio.CancelledError) as raw:
        error = await _call_failed(task, rt, ticket, request, raw, calls)
        if error is raw:
            raise
        raise error from raw
    except Exception as raw:  # a client bug must not keep the reservation and the permit
        unexpected = ProviderError(
            f"the {client.name} client failed: {type(raw).__name__}: {raw}",
            provider=client.name,
            where=task.where,
            outcome_unknown=True,
            hint="this is a bug in the provider client; rerun with --debug for the traceback",
        )
        raise await _call_failed(task, rt, ticket, request, unexpected, calls) from raw
    # A server that reports no usage (some compatible servers) billed an unknown amount:
    # the reservation stays spent, as unconfirmed, so a budget still holds against it.
    reported = completion.usage_reported
    used_tokens = completion.usage.total_tokens if reported else ticket.reserved_tokens
    ticket.limiter.settle(ticket.permit, used_tokens)
    if completion.rate_limits is not None:
        ticket.limiter.observe(completion.rate_limits)
    usage = completion.usage if reported else None
    cost = _settle_budget(rt, task, ticket, usage, unknown=not reported)
    calls.append((completion.usage, cost))
    last_turn = turn >= task.agent.max_turns
    answer = _Turn(completion)
    try:
        if tools is not None and completion.tool_calls and not last_turn:
            answer = _Turn(
                completion,
                await _run_tools(
                    task, rt, tools, completion.tool_calls, attempt=attempt, turn=turn
                ),
            )
    finally:  # the call came back: it is recorded even if the agent is cancelled mid-tool
        not_run = (
            f"not run: max_turns={task.agent.max_turns} reached"
            if last_turn
            else "not run: cancelled"
        )
        log = tool_log(completion.tool_calls, answer.results, not_run=not_run)
        await asyncio.shield(
            _record(
                task,
                rt,
                ticket,
                completion.usage,
                cost,
                confirmed=reported,
                status="ok",
                request_id=completion.request_id,
                tool_calls=log,
            )
        )
    return answer


async def _take_ticket(
    task: AgentTask,
    rt: Runtime,
    request: CompletionRequest,
    provider: str,
    attempt: int,
    turn: int,
) -> _Ticket:
    """Reserve the call's worst-case cost, then take its rate-limit permit (or neither)."""
    from aoe.cost.tokens import estimate_request

    model = task.agent.model
    estimate = estimate_request(model, request)
    reserved = rt.prices.max_cost_usd(model, estimate.input_tokens, request.max_tokens)
    reserved = reserved or Decimal(0)
    hold = None
    if rt.budgets is not None:
        try:
            hold = await rt.budgets.reserve(task.budget_scopes, reserved)
        except BudgetExceededError as err:
            rt.events.publish(
                BudgetHit(
                    run_id=task.run_id,
                    workflow=task.workflow_key,
                    agent=task.agent.id,
                    scope=err.where or "",
                    message=err.message,
                )
            )
            raise
    limiter = rt.limiters.for_model(provider, model.name)
    wait_started = rt.clock.now()
    try:
        permit = await limiter.acquire(
            estimate.total_tokens,
            timeout_s=rt.rate_limit_timeout_s,
            priority=task.agent.priority,
        )
    except BaseException:
        if hold is not None:
            rt.budgets.release(hold)
        raise
    waited = rt.clock.now() - wait_started
    if waited > 0.001:
        rt.events.publish(
            RateLimitHit(
                run_id=task.run_id,
                workflow=task.workflow_key,
                agent=task.agent.id,
                limiter=limiter.name,
                waited_s=waited,
            )
        )
    return _Ticket(
        provider,
        limiter,
        hold,
        permit,
        reserved,
        estimate.total_tokens,
        attempt,
        turn,
        started=time.time(),
    )


async def _call_failed(
    task: AgentTask,
    rt: Runtime,
    ticket: _Ticket,
    request: CompletionRequest,
    raw: BaseException,
    calls: list[tuple[Usage, Decimal]],
) -> BaseException:
    """Settle and record a call that did not answer; return the error to raise.

    A call whose outcome is unknown (timed out, cut off, cancelled in flight) may have
    been billed: its tokens stay taken and its reservation becomes unconfirmed spend.
    """
    error = raw
    if isinstance(raw, TimeoutError):
        error = ProviderTimeout(
            f"no answer within timeout_s={request.timeout_s}",
            provider=ticket.provider,
            where=task.where,
            outcome_unknown=True,
            hint="raise timeout_s for this agent, or check the provider's status",
        )
    usage = error.usage if isinstance(error, ProviderError) else None
    unknown = isinstance(raw, asyncio.CancelledError) or (
        isinstance(error, ProviderError) and error.outcome_unknown
    )
    spent_tokens = ticket.reserved_tokens if unknown else 0
    ticket.limiter.settle(ticket.permit, usage.total_tokens if usage else spent_tokens)
    if isinstance(error, RateLimitedError):
        ticket.limiter.note_429()
        if error.retry_after_s:
            ticket.limiter.pause(error.retry_after_s)
    cost = _settle_budget(rt, task, ticket, usage, unknown=unknown)
    record = _record(
        task,
        rt,
        ticket,
        usage or Usage(),
        cost,
        confirmed=not unknown,
        status=type(error).__name__,
        request_id=None,
    )
    if isinstance(raw, asyncio.CancelledError):
        await asyncio.shield(record)
        return raw
    await record
    calls.append((usage or Usage(), cost))
    return error


def _settle_budget(
    rt: Runtime, task: AgentTask, ticket: _Ticket, usage: Usage | None, *, unknown: bool
) -> Decimal:
    """Turn a reservation into spend: the true cost, or all of it when the outcome is unknown."""
    hold = ticket.hold
    if usage is not None:
        cost = rt.prices.cost_usd(task.agent.model, usage) or Decimal(0)
        if hold is not None:
            rt.budgets.settle(hold, cost, confirmed=True)
        return cost
    if unknown:
        if hold is not None:
            rt.budgets.settle(hold, ticket.reserved_usd, confirmed=False)
        return ticket.reserved_usd
    if hold is not None:
        rt.budgets.release(hold)
    return Decimal(0)


async def _record(
    task: AgentTask,
    rt: Runtime,
    ticket: _Ticket,
    usage: Usage,
    cost: Decimal,
    *,
    confirmed: bool,
    status: str,
    request_id: str | None,
    tool_calls: tuple[Mapping[str, Any], ...] = (),
) -> None:
    """Publish the call and write it to the ledger (before the agent can be reported done)."""
    ended = time.time()
    rt.events.publish(
        ApiCall(
            run_id=task.run_id,
            workflow=task.workflow_key,
            agent=task.agent.id,
            attempt=ticket.attempt,
            provider=ticket.provider,
            model=str(task.agent.model),
            usage=usage,
            cost_usd=float(cost),
            latency_s=ended - ticket.started,
            status=status,
            cost_confirmed=confirmed,
            turn=ticket.turn,
        )
    )
    if rt.ledger is None:
        return
    from aoe.ledger.records import CallRecord

    await rt.ledger.record_call(
        CallRecord(
            run_id=task.run_id,
            workflow_key=task.workflow_key,
            agent_id=task.agent.id,
            attempt=ticket.attempt,
            turn=ticket.turn,
            provider=ticket.provider,
            model=str(task.agent.model),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=cost,
            cost_confirmed=confirmed,
            started_at=ticket.started,
            ended_at=ended,
            status=status,
            request_id=request_id,
            tool_calls=tool_calls,
            estimate_tokens=ticket.reserved_tokens,
        )
    )


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
    except json.JSONDecodeError as exc:
        raise OutputValidationError(
            f"answer is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            where=where,
            hint="the model ignored the output schema; it will be retried",
            text=text,
        ) from None
    validator = _validator_for(json.dumps(thaw(agent.output_schema), sort_keys=True))
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise OutputValidationError(
            f"answer does not match output_schema at {path}: {error.message}",
            where=where,
            hint="the model's answer broke the schema; it will be retried",
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
