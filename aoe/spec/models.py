"""Typed, immutable specs: what a validated workflow, agent, tool and config are.

Everything after the loader works with these objects, never with raw YAML dicts. JSON
values that are data by nature (``output_schema``, ``with``, tool parameters, defaults)
are kept as read-only mappings (``types.MappingProxyType``, recursively frozen).

The field defaults below are aoe's defaults, written nowhere else: the loaders pass only
the keys a file writes (``given``), and a test checks the schemas' ``default``
annotations and the README against these fields.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

RetryStrategy = Literal["immediate", "constant", "linear", "exponential"]
InputType = Literal["string", "number", "integer", "boolean", "object", "array"]
ToolKind = Literal["python", "http", "command", "mcp"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Convert = Callable[[Any], Any]

DEFAULT_PRIORITY = 5
EMPTY: Mapping[str, Any] = MappingProxyType({})
ANY_OBJECT: Mapping[str, Any] = MappingProxyType({"type": "object"})


def given(raw: Mapping[str, Any], converts: Mapping[str, Convert]) -> dict[str, Any]:
    """The keys ``raw`` writes, each converted, as keyword arguments for a spec.

    Keys it leaves out are not passed, so the spec's field default applies: that keeps
    each default in one place.
    """
    return {key: convert(raw[key]) for key, convert in converts.items() if key in raw}


def as_written(value: Any) -> Any:
    """The ``Convert`` of a setting a spec takes just as the file writes it."""
    return value


def freeze(value: Any) -> Any:
    """Turn JSON-like data into read-only mappings and tuples, all the way down."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of ``freeze``: plain dicts and lists, e.g. for JSON or jsonschema."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a file, 1-based, as editors show it."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """``provider/model``, e.g. ``openai/gpt-4o-mini``; the model part may contain ``/``."""

    provider: str
    name: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        provider, sep, name = text.partition("/")
        if not sep or not provider or not name:
            raise ValueError(f"model {text!r} is not of the form provider/model")
        return cls(provider, name)

    def __str__(self) -> str:
        return f"{self.provider}/{self.name}"


@dataclass(frozen=True, slots=True)
class RetrySpec:
    """How often and how long to wait before trying a failed call again."""

    max_retries: int = 3
    strategy: RetryStrategy = "exponential"
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    exponential_base: float = 2.0
    jitter: bool = True


@dataclass(frozen=True, slots=True)
class SimulatedToolCall:
    """A tool call the simulator makes on a given turn (for tool workflows under --simulate)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    turn: int = 1


@dataclass(frozen=True, slots=True)
class SimulateSpec:
    """Shapes an agent's simulated call: how long it takes, how much it says, how it fails.

    ``fail_times`` first attempts fail with ``fail_with`` (a retriable server error by
    default), then the call succeeds.
    """

    latency_s: float | None = None
    output_tokens: int | None = None
    fail_times: int = 0
    fail_with: Literal["server_error", "rate_limit", "timeout", "invalid_output", "bad_request"] = (
        "server_error"
    )
    output: Any = None
    tool_calls: tuple[SimulatedToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A declared workflow input; ``required`` is true when it has no default."""

    name: str
    type: InputType = "string"
    description: str | None = None
    default: Any = None
    required: bool = True
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool an agent may call: ``kind`` says how, ``target`` holds that kind's settings.

    ``parameters`` (the JSON Schema of its arguments) defaults to any object.
    """

    name: str
    description: str
    kind: ToolKind
    target: Mapping[str, Any]
    parameters: Mapping[str, Any] = field(default_factory=lambda: ANY_OBJECT)
    timeout_s: float = 30.0
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The optional settings of an ``http:`` tool (its ``target``); ``timeout_s`` None
    means the tool's own ``timeout_s``. Typed here so their defaults have one home."""

    method: HttpMethod = "POST"
    timeout_s: float | None = None
    max_bytes: int = 8192
    follow_redirects: bool = False

    @classmethod
    def of(cls, target: Mapping[str, Any]) -> HttpSettings:
        """The settings an ``http:`` block writes, these defaults for the rest."""
        return cls(**given(target, _HTTP_SETTINGS))


_HTTP_SETTINGS: Mapping[str, Convert] = {
    "method": str,
    "timeout_s": float,
    "max_bytes": int,
    "follow_redirects": bool,
}


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent after ``uses:`` resolution and ``defaults`` merging."""

    id: str
    model: ModelRef
    prompt: str
    location: Location
    system: str | None = None
    needs: tuple[str, ...] = ()
    module: str | None = None
    description: str | None = None
    priority: int = DEFAULT_PRIORITY
    temperature: float | None = None
    max_tokens: int = 1024
    timeout_s: float = 60.0
    retry: RetrySpec = field(default_factory=RetrySpec)
    cost_limit_usd: Decimal | None = None
    output_schema: Mapping[str, Any] | None = None
    tools: tuple[str, ...] = ()
    max_turns: int = 8
    max_prompt_chars: int | None = None  # None: from the model's context window (templates)
    with_values: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    simulate: SimulateSpec = field(default_factory=SimulateSpec)
    uses: str | None = None
    prompt_location: Location | None = None


def agent_fingerprint(agent: AgentSpec) -> str:
    """A short hash of everything that shapes an agent's answer (model, prompts, schema,
    sampling, tools, ``with`` values, simulation), to tell on ``--resume`` whether an
    output recorded earlier was made by the agent as it is now."""
    shaping = (
        str(agent.model),
        agent.prompt,
        agent.system,
        agent.needs,
        agent.temperature,
        agent.max_tokens,
        agent.tools,
        agent.max_turns,
        repr(thaw(agent.output_schema)),
        repr(thaw(agent.with_values)),
        repr(agent.simulate),
    )
    return hashlib.blake2b(repr(shaping).encode(), digest_size=8).hexdigest()


def fingerprints(spec: WorkflowSpec) -> Mapping[str, str]:
    """``agent_fingerprint`` of every agent of ``spec``, computed once per workflow file."""
    return MappingProxyType({a.id: agent_fingerprint(a) for a in spec.agents.values()})


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A validated workflow file. ``agents`` keeps file order."""

    name: str
    path: Path
    agents: Mapping[str, AgentSpec]
    version: int = 1
    description: str | None = None
    inputs: Mapping[str, InputSpec] = field(default_factory=lambda: EMPTY)
    tools: Mapping[str, ToolSpec] = field(default_factory=lambda: EMPTY)
    budget_usd: Decimal | None = None
    max_parallel_agents: int | None = None
    allow_partial_completion: bool = False
    max_failure_rate: float = 0.0
    critical_priority: int | None = None
    env: tuple[str, ...] = ()
    #: Named shared budgets (``budgets:`` of aoe.yaml, kept in Redis) every call of this
    #: workflow draws on, and where the file names each.
    budgets: tuple[str, ...] = ()
    budget_locations: tuple[Location, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitsSpec:
    """Account limits of one provider key; ``None`` means no limit on that tier."""

    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    requests_per_day: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    concurrent_requests: int | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One configured provider: its wire protocol (``type``), endpoint, key variable, limits."""

    name: str
    type: str
    api_key_env: str | None = None
    base_url: str | None = None
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    model_limits: Mapping[str, LimitsSpec] = field(default_factory=lambda: EMPTY)
    api_version: str | None = None
    max_tokens_field: str = "max_completion_tokens"
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class PriceSpec:
    """A user's price for one model, in USD per million tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None


@dataclass(frozen=True, slots=True)
class SharedBudgetSpec:
    """A named budget shared by every run and process (``budgets:`` in aoe.yaml, kept in
    Redis): at most ``usd`` per ``period`` (``none``: one budget for all time)."""

    name: str
    usd: Decimal
    period: Literal["day", "week", "month", "year", "none"] = "month"


@dataclass(frozen=True, slots=True)
class CoordinationSpec:
    """``coordination:`` in aoe.yaml: where a fleet shares limits, budgets and leases.

    ``permit_ttl_s``: how long a concurrency permit or budget reservation of a process that
    stopped renewing it (killed, cut off) is held before it comes back (see
    ``aoe.coordination``)."""

    redis_url: str | None = None
    permit_ttl_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    """The provider configuration (``aoe.yaml``), merged over the built-in defaults."""

    providers: Mapping[str, ProviderConfig]
    pricing: Mapping[str, PriceSpec] = field(default_factory=lambda: EMPTY)
    path: Path | None = None
    coordination: CoordinationSpec = field(default_factory=CoordinationSpec)
    budgets: Mapping[str, SharedBudgetSpec] = field(default_factory=lambda: EMPTY)
