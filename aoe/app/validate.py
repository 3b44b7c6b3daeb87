"""Everything ``aoe validate`` checks, composed: load, graph, template references, tools.

A file is checked as far as its problems allow, so one run lists every problem the user
has to fix rather than the first: a file that does not load reports the loader's
problems; a file that loads reports graph and template problems together.
"""

from __future__ import annotations

import difflib
import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aoe.errors import AoeError, Problem, SpecError
from aoe.graph import WorkflowGraph
from aoe.spec.config import load_config
from aoe.spec.loader import load_workflow
from aoe.spec.models import AgentSpec, Config, Location, WorkflowSpec
from aoe.spec.templates import TemplateSyntax, least_size, prompt_char_limit, references
from aoe.tools.checks import tool_problems

__all__ = ["CheckResult", "CheckedWorkflow", "check_files", "check_workflow"]


@dataclass(frozen=True, slots=True)
class CheckedWorkflow:
    """A workflow that passed every check: its spec, its graph, and what to warn about
    (a template that renders past its agent's ``max_prompt_chars`` on its own text)."""

    spec: WorkflowSpec
    graph: WorkflowGraph
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome for one file of ``aoe validate``: a checked workflow or the error."""

    path: Path
    checked: CheckedWorkflow | None = None
    error: AoeError | None = None

    @property
    def ok(self) -> bool:
        """True when the file passed every check."""
        return self.checked is not None

    @property
    def problems(self) -> tuple[Problem, ...]:
        """The problems of a ``SpecError``; empty for a good file or another error."""
        return self.error.problems if isinstance(self.error, SpecError) else ()


def _template_problems(
    spec: WorkflowSpec, agent: AgentSpec, graph: WorkflowGraph | None
) -> list[Problem]:
    """Names a prompt or system template uses that it cannot have at run time."""

    loc = agent.prompt_location or agent.location
    problems: list[Problem] = []

    def add(at: Location, message: str, hint: str | None) -> None:
        problems.append(Problem(at.file, at.line, at.col, message, hint))

    for field, source in (("prompt", agent.prompt), ("system", agent.system)):
        if not source:
            continue
        base = loc if field == "prompt" else agent.location
        try:
            refs = references(source)
        except TemplateSyntax as exc:  # the loader reports these; kept for specs built in code
            add(base, f"{field} of '{agent.id}' is not a valid template: {exc.message}", None)
            continue
        for name in sorted(refs.agents):
            # the line inside a block-scalar prompt where agents.<name> first appears
            at = Location(base.file, base.line + refs.line("agents", name) - 1, base.col)
            if name not in spec.agents:
                close = difflib.get_close_matches(name, list(spec.agents), n=1)
                hint = f"did you mean '{close[0]}'?" if close else "agents.<id> names an agent"
                add(
                    at,
                    f"{field} of '{agent.id}' uses agents.{name}, which is no agent",
                    hint,
                )
            elif graph is not None and not graph.is_upstream(name, agent.id):
                add(
                    at,
                    f"{field} of '{agent.id}' uses agents.{name}, "
                    f"but '{name}' is not upstream of '{agent.id}'; add it to needs",
                    f"add '{name}' to the needs of '{agent.id}' (or of one of its needs)",
                )
    return problems


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while a file is loaded and checked.

    Loading builds hundreds of thousands of small, acyclic objects; each time the
    collector runs it walks all of them again, which costs about a third of the load
    time of a 10,000-agent file. Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_workflow(path: Path | str, config: Config | None = None) -> CheckedWorkflow:
    """Load and check one workflow file; raise ``SpecError`` with every problem found.

    Models must name a configured provider: of ``config``, or else of the ``aoe.yaml``
    beside the file (the built-ins ``openai``, ``anthropic`` and ``sim`` without one).
    """
    with _cycle_collector_paused():
        return _check(Path(path), config)


def _check(path: Path, config: Config | None) -> CheckedWorkflow:

    spec = load_workflow(path)
    graph, problems = WorkflowGraph.analyse(spec)
    found = list(problems)
    config = config or load_config(None, search_dir=path.parent)
    found.extend(_provider_problems(spec, config))
    found.extend(_budget_problems(spec, config))
    for agent in spec.agents.values():
        found.extend(_template_problems(spec, agent, graph))
    if spec.tools:
        found.extend(tool_problems(spec))
    if found or graph is None:
        found.sort(key=lambda p: (p.file, p.line, p.col))
        raise SpecError(found)
    warnings = [w for agent in spec.agents.values() for w in _size_warnings(agent)]
    return CheckedWorkflow(spec, graph, tuple(warnings))


def _size_warnings(agent: AgentSpec) -> list[Problem]:
    """Templates whose own text (``'x' * N``, ``range(N)`` loops...) passes the limit."""
    limit = prompt_char_limit(agent.max_prompt_chars, None)
    found = []
    for field, source in (("prompt", agent.prompt), ("system", agent.system)):
        if not source:
            continue
        size, line = least_size(source)
        if size > limit:
            base = agent.prompt_location or agent.location if field == "prompt" else agent.location
            found.append(
                Problem(
                    base.file,
                    base.line + line - 1,
                    base.col,
                    f"{field} of '{agent.id}' renders to at least {size:,} characters, "
                    f"more than its limit of {limit:,}: the agent will fail before any call",
                    "make the template smaller, or raise max_prompt_chars (without it, "
                    "the limit comes from the model's context window, else 1,000,000)",
                )
            )
    return found


def _provider_problems(spec: WorkflowSpec, config: Config) -> list[Problem]:
    known = sorted({*config.providers, "sim"})
    problems = []
    for agent in spec.agents.values():
        if agent.model.provider not in known:
            problems.append(
                Problem(
                    agent.location.file,
                    agent.location.line,
                    agent.location.col,
                    f"agents.{agent.id}.model: no provider named '{agent.model.provider}' "
                    f"(configured: {', '.join(known)})",
                    "add it under providers: in aoe.yaml beside the workflow (or --config), "
                    "or use one of the configured providers",
                )
            )
    return problems


def _budget_problems(spec: WorkflowSpec, config: Config) -> list[Problem]:
    """``budgets:`` names only shared budgets that aoe.yaml declares."""
    known = sorted(config.budgets)
    return [
        Problem(
            at.file,
            at.line,
            at.col,
            f"budgets: no shared budget named '{name}' is declared in aoe.yaml "
            f"(declared: {', '.join(known) or 'none'})",
            f"add `budgets: {{{name}: {{usd: ..., period: month}}}}` to aoe.yaml beside the "
            "workflow (or --config), or name a declared one",
        )
        for name, at in zip(spec.budgets, spec.budget_locations, strict=True)
        if name not in config.budgets
    ]


def check_files(paths: Iterable[Path | str]) -> list[CheckResult]:
    """Check several files; one file's errors never stop the others from being checked."""
    results = []
    for path in paths:
        try:
            results.append(CheckResult(Path(path), checked=check_workflow(path)))
        except AoeError as err:
            results.append(CheckResult(Path(path), error=err))
    return results
