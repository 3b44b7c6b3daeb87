"""Everything a run checks before a cent is spent: ``prepare`` (and resume's own checks).

``prepare`` does all the work that can fail on bad input (files, inputs, ``--each`` rows,
config, prices a budget depends on, API keys) before a single call is made, so bad input
is exit 2 and costs nothing. It hands back a ``PreparedRun``: the jobs, each with the
graph validation built, ready for ``aoe.app.run.RunHandle``.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aoe.app.validate import CheckedWorkflow, check_workflow
from aoe.coordination.config import REDIS_URL_ENV, settings_for
from aoe.cost.money import format_usd
from aoe.cost.pricing import PriceBook
from aoe.engine.scheduler import WorkflowJob
from aoe.errors import AoeError, ConfigError, LedgerError, Problem, SpecError, UsageError
from aoe.graph import WorkflowGraph
from aoe.ledger.lease import HEARTBEAT_S
from aoe.ledger.records import ResumeState, RunLeaseHolder
from aoe.ledger.store import Ledger, Target, default_db_path, ledger_exists
from aoe.providers.registry import ClientPool
from aoe.spec.config import load_config
from aoe.spec.inputs import parse_input_args, resolve_inputs
from aoe.spec.models import Config, WorkflowSpec, fingerprints


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What the user asked for on the command line.

    ``lease_heartbeat_s`` is how often the run renews its lease in the ledger; another
    process may take the run over once three heartbeats were missed (``aoe.ledger.lease``).
    """

    files: tuple[Path, ...] = ()
    input_pairs: tuple[str, ...] = ()
    input_files: tuple[Path, ...] = ()
    each: Path | None = None
    simulate: bool = False
    budget_usd: Decimal | None = None
    max_parallel: int | None = None
    max_workflows: int | None = None
    config_path: Path | None = None
    db_path: Target | None = None  # a file, or a postgresql:// URL
    resume: str | None = None
    seed: int = 0
    command: str = ""
    use_ledger: bool = True
    lease_heartbeat_s: float = HEARTBEAT_S
    budget_names: tuple[str, ...] = ()  # --budget-name: shared budgets of aoe.yaml


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A run that passed every check: jobs to execute and what the user should know.

    A resumed run was prepared holding the run's lease (``lease``), taken before reading
    what to resume; ``RunHandle.execute`` goes on holding it. A lease that is never
    executed expires after three missed heartbeats.
    """

    options: RunOptions
    jobs: tuple[WorkflowJob, ...]
    config: Config
    simulate: bool
    run_id: str | None = None
    budget_usd: Decimal | None = None
    spent: Mapping[str, Decimal] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    lease: RunLeaseHolder | None = None


def _check_files(files: Sequence[Path], config: Config | None = None) -> list[CheckedWorkflow]:
    checked: list[CheckedWorkflow] = []
    problems: list[Problem] = []
    for path in files:
        try:
            checked.append(check_workflow(path, config))
        except SpecError as err:
            problems.extend(err.problems)
    if problems:
        raise SpecError(problems)
    return checked


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """``--each`` rows: JSON Lines (an object per line) or CSV with a header row."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot read --each file {path}: {exc.strerror}",
            hint="pass a .jsonl or .csv file that exists",
        ) from None
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        rows = [dict(r) for r in csv.DictReader(text.splitlines())]
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UsageError(
                    f"line {number} is not JSON: {exc}",
                    where=f"{path}:{number}",
                    hint="each line must be one JSON object of inputs",
                ) from None
            if not isinstance(row, dict):
                raise UsageError(
                    "a row must be a JSON object of inputs",
                    where=f"{path}:{number}",
                    hint='write e.g. {"invoice_text": "..."}',
                )
            rows.append(row)
    else:
        raise UsageError(
            f"--each needs a .jsonl or .csv file, not {path.name}",
            hint="one row per workflow instance, its keys being the inputs",
        )
    if not rows:
        raise UsageError(f"--each file {path} has no rows", hint="add one row per instance")
    return rows


def _unique_key(name: str, taken: set[str]) -> str:
    key, n = name, 2
    while key in taken:
        key, n = f"{name}@{n}", n + 1
    taken.add(key)
    return key


def _jobs(workflows: Sequence[CheckedWorkflow], options: RunOptions) -> list[WorkflowJob]:
    specs = [w.spec for w in workflows]
    given = parse_input_args(options.input_pairs, options.input_files)
    if len(specs) > 1:
        declared = {name for s in specs for name in s.inputs}
        unknown = sorted(set(given) - declared)
        if unknown:
            raise UsageError(
                f"input {unknown[0]!r} is declared by none of the workflows",
                hint="check the name against each workflow's `inputs:`",
            )
    rows = _read_rows(options.each) if options.each else None
    jobs: list[WorkflowJob] = []
    taken: set[str] = set()
    for spec, graph in ((w.spec, w.graph) for w in workflows):
        prints = fingerprints(spec)
        own = given if len(specs) == 1 else {k: v for k, v in given.items() if k in spec.inputs}
        if rows is None:
            key = _unique_key(spec.name, taken)
            jobs.append(WorkflowJob(key, spec, graph, prints, resolve_inputs(spec, own)))
            continue
        for number, row in enumerate(rows, 1):
            try:
                inputs = resolve_inputs(spec, {**own, **row})
            except AoeError as err:
                raise UsageError(
                    f"row {number} of {options.each}: {err.message}",
                    where=f"{options.each}:{number}",
                    hint=err.hint,
                ) from None
            key = _unique_key(f"{spec.name}#{number}", taken)
            jobs.append(WorkflowJob(key, spec, graph, prints, inputs))
    return jobs


def _price_warnings(
    config: Config, jobs: Sequence[WorkflowJob], budget_usd: Decimal | None
) -> list[str]:
    """Unknown prices: a warning, or an error when a budget has to be enforced for them."""
    book = PriceBook.from_config(config)
    warnings: list[str] = []
    seen: set[str] = set()
    for job in jobs:
        for agent in job.spec.agents.values():
            model = str(agent.model)
            if model in seen or book.is_known(agent.model):
                continue
            seen.add(model)
            if (
                budget_usd is not None
                or job.spec.budget_usd is not None
                or agent.cost_limit_usd is not None
            ):
                raise ConfigError(
                    f"no price is known for model {model}, so its budget cannot be enforced",
                    where=f"{agent.location}",
                    hint=f"add `pricing: {{{model}: {{input_per_mtok: ..., "
                    "output_per_mtok: ...}}` to aoe.yaml",
                )
            warnings.append(f"no price is known for {model}: its calls are recorded at $0")
    return warnings


def prepare(options: RunOptions) -> PreparedRun:
    """Check everything a run needs before anything is spent; raise an AoeError if not."""
    if options.resume:
        return _prepare_resume(options)
    if not options.files:
        raise UsageError(
            "no workflow file given", hint="aoe run workflows/invoice-processing.yaml --simulate"
        )
    config = load_config(options.config_path, search_dir=options.files[0].resolve().parent)
    checked = _check_files(options.files, config)
    _check_env([c.spec for c in checked], config)
    jobs = _jobs(checked, options)
    _check_shared_budgets(config, jobs, options.budget_names)
    warnings = _unread_configs(options) + _price_warnings(config, jobs, options.budget_usd)
    if not options.simulate:
        _check_keys(config, jobs)
    return PreparedRun(
        options,
        tuple(jobs),
        config,
        options.simulate,
        budget_usd=options.budget_usd,
        warnings=tuple(warnings),
    )


def _unread_configs(options: RunOptions) -> list[str]:
    """One run has one provider config: say so when other files sit beside another one."""
    if options.config_path is not None:
        return []
    first = options.files[0].resolve().parent
    others = {f.resolve().parent for f in options.files} - {first}
    return [
        f"{d / 'aoe.yaml'} is not read: one run uses one config (the one beside "
        f"{options.files[0]}); pass --config to choose"
        for d in sorted(others)
        if (d / "aoe.yaml").exists()
    ]


def _check_shared_budgets(
    config: Config, jobs: Sequence[WorkflowJob], cli_names: Sequence[str]
) -> None:
    """Named shared budgets (``--budget-name``, a workflow's ``budgets:``) must be declared
    in aoe.yaml and need Redis to be shared through: without it, exit 2 before a cent."""
    known = ", ".join(sorted(config.budgets)) or "none"
    for name in cli_names:
        if name not in config.budgets:
            raise ConfigError(
                f"--budget-name {name}: no shared budget of that name is declared in "
                f"{config.path or 'aoe.yaml'} (declared: {known})",
                hint=f"add `budgets: {{{name}: {{usd: ..., period: month}}}}` to aoe.yaml",
            )
    named = dict.fromkeys(cli_names)
    where: str | None = None
    for job in jobs:
        for name, at in zip(job.spec.budgets, job.spec.budget_locations, strict=True):
            named.setdefault(name)
            where = where or str(at)
    if named and settings_for(config) is None:
        raise ConfigError(
            f"the run draws on shared budgets ({', '.join(named)}) but no Redis is configured "
            "to share them between processes",
            where=where,
            hint=f"set coordination.redis_url in aoe.yaml or {REDIS_URL_ENV} (see README, "
            '"Running on many machines"), or drop the budget names and use --budget',
        )


def _check_env(specs: Sequence[WorkflowSpec], config: Config) -> None:
    """A prompt may never read an API key: it would be sent to the model and recorded."""
    keys = {p.api_key_env for p in config.providers.values() if p.api_key_env}
    for spec in specs:
        for name in spec.env:
            if name in keys or name.endswith("_API_KEY"):
                raise ConfigError(
                    f"env: lists {name}, an API key: a prompt that reads it sends it to the "
                    "model and into the ledger",
                    where=str(spec.path),
                    hint=f"remove {name} from env:; keys reach providers through api_key_env",
                )


def _check_keys(config: Config, jobs: Sequence[WorkflowJob]) -> None:
    providers = sorted({a.model.provider for j in jobs for a in j.spec.agents.values()})
    for name in providers:
        if name not in config.providers:
            known = ", ".join(sorted(config.providers))
            raise ConfigError(
                f"no provider named {name!r} is configured (configured: {known})",
                hint="add it under `providers:` in aoe.yaml, or run with --simulate",
            )
    ClientPool(config.providers).check_keys(providers)


def _prepare_resume(options: RunOptions) -> PreparedRun:
    if options.files or options.input_pairs or options.input_files or options.each:
        raise UsageError(
            "--resume takes no workflow files, inputs or --each: a run resumes with the "
            "files and inputs it started with",
            hint=f"aoe run --resume {options.resume}",
        )
    db = options.db_path or default_db_path()
    if not ledger_exists(db):
        raise UsageError(f"there is no ledger at {db}", hint="pass --db or set AOE_DB")
    with Ledger.open(db) as ledger:
        # The lease first: what to resume is read by the one process that will resume it.
        run_id = ledger.resolve_run_id(options.resume or "")
        lease = ledger.take_lease_now(run_id, heartbeat_s=options.lease_heartbeat_s)
        try:
            return _resume(options, ledger.resume_state(run_id, lease=lease), lease)
        except BaseException:
            with contextlib.suppress(LedgerError):  # else it expires after its window
                ledger.release_lease_now(lease)
            raise


def _resume(options: RunOptions, state: ResumeState, lease: RunLeaseHolder) -> PreparedRun:
    if options.simulate and not state.simulate:
        raise UsageError(
            f"run {state.run_id} called real providers; resuming it --simulate would mix "
            "simulated answers into it",
            hint=f"aoe run --resume {state.run_id} (without --simulate)",
        )
    files = tuple(Path(f) for f in state.files)
    config = load_config(
        options.config_path, search_dir=files[0].resolve().parent if files else None
    )
    by_path = {str(Path(c.spec.path)): c for c in _check_files(files, config)}
    jobs: list[WorkflowJob] = []
    spent: dict[str, Decimal] = {}
    notes: list[str] = []
    if state.simulate and not options.simulate:
        notes.append(f"run {state.run_id} was simulated; it resumes simulated")
    for key, wf in state.workflows.items():
        checked = by_path.get(str(Path(wf.path)))
        if checked is None:
            raise UsageError(
                f"workflow file {wf.path} of run {state.run_id} is gone",
                hint="restore the file, or start a new run",
            )
        spec, graph, current = checked.spec, checked.graph, fingerprints(checked.spec)
        inputs = resolve_inputs(spec, dict(wf.inputs))
        completed, rerun = _still_valid(graph, current, wf.completed, wf.fingerprints)
        if rerun:
            notes.append(
                f"{key}: {', '.join(sorted(rerun))} changed since they completed "
                "(or need an agent that did) and will run again"
            )
        attempts = dict(wf.next_attempt)
        jobs.append(WorkflowJob(key, spec, graph, current, inputs, completed, attempts))
        spent[key] = wf.spent_usd
        for agent_id, amount in wf.agent_spent_usd.items():
            spent[f"{key}/{agent_id}"] = amount
    spent["run"] = state.spent_usd
    simulate = state.simulate or options.simulate
    budget = options.budget_usd if options.budget_usd is not None else state.budget_usd
    _check_shared_budgets(config, jobs, options.budget_names)
    warnings = _lost_calls_note(state) + notes + _price_warnings(config, jobs, budget)
    if not simulate:
        _check_keys(config, jobs)
    return PreparedRun(
        options,
        tuple(jobs),
        config,
        simulate,
        run_id=state.run_id,
        budget_usd=budget,
        spent=spent,
        warnings=tuple(warnings),
        lease=lease,
    )


def _lost_calls_note(state: ResumeState) -> list[str]:
    """What the calls that were in flight when the run stopped cost, and who runs again.

    Their outcome is unknown (the provider may have answered and billed them after the
    process died), so they stay spent at their reservations; their agents never got an
    answer, so they run again.
    """
    lost = state.lost_calls
    if not lost:
        return []
    several = len(state.workflows) > 1
    agents = dict.fromkeys(
        f"{c.workflow_key}/{c.agent_id}" if several else c.agent_id for c in lost
    )
    cost = format_usd(sum((c.reserved_usd for c in lost), Decimal(0)))
    calls = "1 call was" if len(lost) == 1 else f"{len(lost)} calls were"
    whose = "its" if len(lost) == 1 else "their"
    who = (
        f"agent {next(iter(agents))} runs"
        if len(agents) == 1
        else f"agents {', '.join(agents)} run"
    )
    return [
        f"{calls} in flight when run {state.run_id} stopped: {whose} cost stays counted as "
        f"unconfirmed ({cost}) and {who} again"
    ]


def _still_valid(
    graph: WorkflowGraph,
    current: Mapping[str, str],
    completed: Mapping[str, Any],
    recorded: Mapping[str, str | None],
) -> tuple[dict[str, Any], set[str]]:
    """Completed outputs a resume may reuse, and the agents that must run again.

    An agent whose fingerprint now (``current``) differs from the one ``recorded`` when it
    completed runs again, and so does every completed agent downstream of it, which was
    fed the old output. An agent no longer in the file is dropped.
    """
    changed = [
        a for a in completed if a in current and (recorded.get(a) or "") not in ("", current[a])
    ]
    stale = set(changed).union(*(graph.downstream(a) for a in changed))
    keep = {a: o for a, o in completed.items() if a in current and a not in stale}
    return keep, stale & set(completed)
