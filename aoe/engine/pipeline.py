"""One agent's execution, as a readable sequence of steps.

    render prompt -> reserve budget -> acquire rate limit -> call provider
    -> settle cost and limits -> record the call -> validate output -> hand it downstream

The middle steps are one provider call (``aoe.engine.call``). An agent with ``tools``
repeats them once per model turn (``_tool_loop``): each turn is its own call, with its
own reservation, permit and ledger row, and the tool calls it asked for run
(concurrently) before that row is written, so it holds them and their results. The loop
ends at an answer without tool calls, or fails at ``max_turns``.

A failed attempt goes to the retry policy (``aoe.retry.decide``), which says whether and
when to try again; ``run_agent`` is the one retry loop. Every call that came back is in
the ledger before the agent is reported done; a call whose outcome is unknown keeps its
budget reservation as unconfirmed spend.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aoe.engine.call import call
from aoe.engine.results import AgentResult, AgentState, AttemptResult
from aoe.engine.runtime import Runtime
from aoe.engine.task import AgentTask, Attempt
from aoe.errors import (
    AoeError,
    BudgetExceededError,
    OutputTruncatedError,
    OutputValidationError,
    RateLimitedError,
    RateLimitTimeoutError,
    ToolError,
)
from aoe.ledger.records import AttemptEnd, AttemptStart, AttemptState
from aoe.monitor.events import AgentRetrying, AgentStarted
from aoe.providers.base import Completion, CompletionRequest, Message, wire_name
from aoe.retry import decide
from aoe.spec.models import AgentSpec, thaw
from aoe.spec.templates import DEFAULT_MAX_PROMPT_CHARS, prompt_char_limit, render
from aoe.tools import result_message

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator


@dataclass(frozen=True, slots=True)
class _Outcome:
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
    number = task.first_attempt
    started_at = rt.clock.wall()
    while True:
        outcome = await _run_attempt(task, rt, number)
        task.attempts.append(outcome.result)
        error = outcome.error
        if error is None:
            state, output, message = AgentState.COMPLETED, outcome.output, None
            break
        decision = decide(
            error,
            attempt=number - task.first_attempt + 1,
            spec=task.agent.retry,
            rng=rt.rng(task.workflow_key, task.agent.id, number),
        )
        if not decision.retry:
            state, output, message = final_state(error), None, str(error)
            break
        rt.events.publish(
            AgentRetrying(
                task.envelope.of_attempt(number),
                rt.clock.wall(),
                error=str(error),
                delay_s=decision.delay_s,
            )
        )
        await rt.clock.sleep(decision.delay_s)
        number += 1
    return AgentResult(
        task.agent.id,
        state,
        tuple(task.attempts),
        output,
        error=message,
        started_at=started_at,
        ended_at=rt.clock.wall(),
    )


async def _run_attempt(task: AgentTask, rt: Runtime, number: int) -> _Outcome:
    attempt = Attempt.begin(task, rt, number)
    agent = task.agent
    rt.events.publish(
        AgentStarted(
            attempt.envelope, attempt.started_at, model=str(agent.model), module=agent.module
        )
    )
    try:
        await rt.recorder.start_attempt(
            AttemptStart(
                task.run_id,
                task.workflow_key,
                agent.id,
                number,
                agent.module,
                str(agent.model),
                attempt.started_at,
                fingerprint=task.fingerprint,
            )
        )
        request = build_request(task, number, max_chars=_prompt_limit(task, rt))
        if agent.tools:
            completion = await _tool_loop(attempt, request)
        else:
            completion = (await call(attempt, request)).completion
        output = parse_output(
            agent, completion.text, where=task.where, finish_reason=completion.finish_reason
        )
    except AoeError as error:
        if error.where is None:
            error.where = attempt.where
        state = final_state(error)
        await _finish(attempt, state, error=error)
        return _Outcome(_result(attempt, state, error), error=error)
    except asyncio.CancelledError:
        task.attempts.append(_result(attempt, AgentState.CANCELLED))
        await asyncio.shield(_finish(attempt, AgentState.CANCELLED))
        raise
    await _finish(attempt, AgentState.COMPLETED, output=output)
    return _Outcome(_result(attempt, AgentState.COMPLETED), output)


def _result(attempt: Attempt, state: AgentState, error: AoeError | None = None) -> AttemptResult:
    return AttemptResult(
        attempt.number,
        state,
        attempt.started_at,
        attempt.rt.clock.wall(),
        attempt.usage,
        attempt.cost_usd,
        error=str(error) if error else None,
        error_type=type(error).__name__ if error else None,
    )


_STATE: dict[AgentState, AttemptState] = {
    AgentState.COMPLETED: "COMPLETED",
    AgentState.FAILED: "FAILED",
    AgentState.RATE_LIMITED: "RATE_LIMITED",
    AgentState.BUDGET_EXCEEDED: "BUDGET_EXCEEDED",
    AgentState.CANCELLED: "CANCELLED",
}


async def _finish(
    attempt: Attempt, state: AgentState, *, error: AoeError | None = None, output: Any = None
) -> None:
    task = attempt.task
    await attempt.rt.recorder.finish_attempt(
        AttemptEnd(
            task.run_id,
            task.workflow_key,
            task.agent.id,
            attempt.number,
            _STATE[state],
            attempt.rt.clock.wall(),
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


def _prompt_limit(task: AgentTask, rt: Runtime) -> int:
    """The agent's ``max_prompt_chars``, else what the model's context window allows."""
    model = task.agent.model
    if task.agent.max_prompt_chars is not None:
        return task.agent.max_prompt_chars
    window = rt.model_info(rt.clients.client_for(model), model.name).context_window
    return prompt_char_limit(None, window)


def build_request(
    task: AgentTask, attempt: int, *, max_chars: int = DEFAULT_MAX_PROMPT_CHARS
) -> CompletionRequest:
    """Render the agent's templates into one provider request.

    A prompt or system text past ``max_chars`` fails while rendering, before anything is
    reserved or sent (``TemplateRenderError``, not retried).
    """
    agent = task.agent
    context = render_context(task)
    where = task.where
    prompt = render(agent.prompt, context, where=f"{where} prompt", max_chars=max_chars)
    system = (
        render(agent.system, context, where=f"{where} system", max_chars=max_chars)
        if agent.system
        else None
    )
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
        trace_id=task.where,
    )


@lru_cache(maxsize=4096)
def _schema_name(agent_id: str) -> str:
    return wire_name(agent_id, 64)


async def _tool_loop(attempt: Attempt, request: CompletionRequest) -> Completion:
    """Turns of ``complete_with_tools`` until the model answers without asking for a tool."""
    task = attempt.task
    max_turns = task.agent.max_turns
    toolbox = await attempt.rt.tools.for_agent(task.workflow, task.agent)
    try:
        request = replace(request, tools=toolbox.definitions())
        messages = list(request.messages)
        for turn in range(1, max_turns + 1):
            answer = await call(
                attempt, replace(request, messages=tuple(messages)), turn, tools=toolbox
            )
            completion = answer.completion
            if not completion.tool_calls:
                return completion
            if turn == max_turns:
                break
            messages.append(Message("assistant", completion.text, completion.tool_calls))
            messages.extend(map(result_message, completion.tool_calls, answer.results))
    finally:
        await toolbox.aclose()
    raise ToolError(
        f"the model still asked for tools after max_turns={max_turns} turns",
        hint="raise max_turns for this agent, or tell the model in the prompt when to answer",
    )


@lru_cache(maxsize=1024)
def _validator_for(schema_json: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - 140 ms, only for output_schema

    return Draft202012Validator(json.loads(schema_json))


#: Finish reasons that say the answer was cut at max_tokens (OpenAI, Anthropic).
CUT_AT_MAX_TOKENS = frozenset({"length", "max_tokens"})


def parse_output(agent: AgentSpec, text: str, *, where: str, finish_reason: str = "stop") -> Any:
    """The agent's output: parsed and validated JSON with ``output_schema``, else the text.

    An answer that is not valid because it was cut at ``max_tokens`` raises
    ``OutputTruncatedError``, which is not retried: the same request would be cut again.
    """
    if agent.output_schema is None:
        return text
    body = _strip_fences(text)
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        if finish_reason in CUT_AT_MAX_TOKENS:
            raise _cut(agent, where, text) from None
        raise OutputValidationError(
            f"answer is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            where=where,
            hint="the model ignored the output schema; it will be retried",
            text=text,
        ) from None
    validator = _validator_for(json.dumps(thaw(agent.output_schema), sort_keys=True))
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
    if error is not None:
        if finish_reason in CUT_AT_MAX_TOKENS:
            raise _cut(agent, where, text)
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise OutputValidationError(
            f"answer does not match output_schema at {path}: {error.message}",
            where=where,
            hint="the model's answer broke the schema; it will be retried",
            text=text,
        )
    return value


def _cut(agent: AgentSpec, where: str, text: str) -> OutputTruncatedError:
    return OutputTruncatedError(
        f"the answer was cut at max_tokens={agent.max_tokens} before its JSON was complete "
        f"({len(text)} characters came back); not retried, as it would be cut again: "
        "raise max_tokens",
        where=where,
        hint=f"raise max_tokens for this agent (now {agent.max_tokens}), or ask for less output",
        text=text,
    )


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        first_newline = stripped.find("\n")
        if first_newline != -1 and stripped.endswith("```"):
            return stripped[first_newline + 1 : -3].strip()
    return stripped
