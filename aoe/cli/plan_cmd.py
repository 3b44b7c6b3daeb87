"""``aoe plan FILE``: show levels, critical path and per-agent settings of a workflow."""

from __future__ import annotations

import enum
import gc
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from aoe.app.validate import CheckedWorkflow


class PlanFormat(enum.StrEnum):
    """What ``aoe plan`` prints: a table for people, JSON or a diagram for machines."""

    table = "table"
    json = "json"
    mermaid = "mermaid"
    dot = "dot"


def plan(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The workflow file.")],
    output_format: Annotated[
        PlanFormat, typer.Option("--format", "-f", help="table, json, mermaid or dot.")
    ] = PlanFormat.table,
    input_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", metavar="KEY=VALUE", help="Set an input; KEY=@path reads a file."
        ),
    ] = None,
    inputs_file: Annotated[
        Path | None,
        typer.Option("--inputs", metavar="FILE", help="Inputs from a JSON or YAML file."),
    ] = None,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate", help="Tokens and USD per agent and in total (min/expected/max)."
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", metavar="FILE", help="Provider config, for prices."),
    ] = None,
) -> None:
    """Show the plan: levels, critical path, each agent's module, model, priority, budget.

    Inputs are optional here; when given they are checked against the workflow's inputs
    and shown in the JSON plan. ``--estimate`` renders every prompt with the inputs (and
    defaults) and counts tokens and cost before anything is spent.
    """
    from aoe.app.validate import check_workflow

    checked = check_workflow(file)
    # Keep the cycle collector from walking the loaded spec (hundreds of thousands of
    # objects for a large file) again and again while the plan is rendered.
    gc.freeze()
    try:
        _render(checked, output_format, input_pairs or [], inputs_file, estimate, config)
    finally:
        gc.unfreeze()


def _render(
    checked: CheckedWorkflow,
    output_format: PlanFormat,
    input_pairs: list[str],
    inputs_file: Path | None,
    estimate: bool = False,
    config: Path | None = None,
) -> None:
    from aoe.app.plan import plan_to_dict, plan_to_json, to_dot, to_mermaid

    resolved = None
    if input_pairs or inputs_file is not None or estimate:
        from aoe.spec.inputs import parse_input_args, resolve_inputs

        given = parse_input_args(input_pairs, [inputs_file] if inputs_file else [])
        resolved = dict(resolve_inputs(checked.spec, given))
    figures = None
    if estimate:
        if output_format in (PlanFormat.mermaid, PlanFormat.dot):
            from aoe.errors import UsageError

            raise UsageError(
                "--estimate goes with --format table or json",
                hint="drop --estimate, or use --format json",
            )
        from aoe.cost.estimate import estimate_to_dict, estimate_workflow
        from aoe.cost.pricing import PriceBook
        from aoe.spec.config import load_config

        prices = PriceBook.from_config(load_config(config, search_dir=checked.spec.path.parent))
        figures = estimate_to_dict(estimate_workflow(checked.spec, resolved or {}, prices))
    if output_format is PlanFormat.json:
        document = plan_to_dict(checked, resolved)
        if figures is not None:
            document["estimate"] = figures
        typer.echo(plan_to_json(document), nl=False)
    elif output_format is PlanFormat.mermaid:
        typer.echo(to_mermaid(checked), nl=False)
    elif output_format is PlanFormat.dot:
        typer.echo(to_dot(checked), nl=False)
    else:
        from aoe.ui.plan_view import print_estimate, print_plan

        print_plan(plan_to_dict(checked, resolved))
        if figures is not None:
            print_estimate(figures)


def register(app: typer.Typer) -> None:
    """Add ``plan`` to ``app``."""
    app.command("plan")(plan)
