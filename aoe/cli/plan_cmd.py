"""``aoe plan FILE``: show levels, critical path and per-agent settings of a workflow."""

from __future__ import annotations

import enum
import gc
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from aoe.validate import CheckedWorkflow


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
) -> None:
    """Show the plan: levels, critical path, each agent's module, model, priority, budget.

    Inputs are optional here; when given they are checked against the workflow's inputs
    and shown in the JSON plan.
    """
    from aoe.validate import check_workflow

    checked = check_workflow(file)
    # Keep the cycle collector from walking the loaded spec (hundreds of thousands of
    # objects for a large file) again and again while the plan is rendered.
    gc.freeze()
    try:
        _render(checked, output_format, input_pairs or [], inputs_file)
    finally:
        gc.unfreeze()


def _render(
    checked: CheckedWorkflow,
    output_format: PlanFormat,
    input_pairs: list[str],
    inputs_file: Path | None,
) -> None:
    from aoe.plan import plan_to_dict, plan_to_json, to_dot, to_mermaid

    resolved = None
    if input_pairs or inputs_file is not None:
        from aoe.spec.inputs import parse_input_args, resolve_inputs

        given = parse_input_args(input_pairs, [inputs_file] if inputs_file else [])
        resolved = dict(resolve_inputs(checked.spec, given))
    if output_format is PlanFormat.json:
        typer.echo(plan_to_json(plan_to_dict(checked, resolved)), nl=False)
    elif output_format is PlanFormat.mermaid:
        typer.echo(to_mermaid(checked), nl=False)
    elif output_format is PlanFormat.dot:
        typer.echo(to_dot(checked), nl=False)
    else:
        from aoe.ui.plan_view import print_plan

        print_plan(plan_to_dict(checked, resolved))


def register(app: typer.Typer) -> None:
    """Add ``plan`` to ``app``."""
    app.command("plan")(plan)
