"""``--junit PATH``: a run as JUnit XML, the format every CI system reads.

One ``<testsuite>`` per workflow instance and one ``<testcase>`` per agent (classname is
the workflow key, name the agent id). The document validates against the Ant/Jenkins
JUnit schema (Windy Road's ``JUnit.xsd``), which allows ``<properties>`` only on a suite:
so per-agent figures are suite properties named ``<agent>.<figure>`` (tokens, cost_usd,
attempts, model, module), next to the workflow's own totals.
"""

from __future__ import annotations

import datetime as dt
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from aoe.cost.money import decimal_text
from aoe.engine.results import AgentResult, AgentState, RunResult, WorkflowResult
from aoe.ledger.files import open_private

if TYPE_CHECKING:
    from aoe.engine.scheduler import WorkflowJob

#: workflow key -> agent id -> (model, module)
AgentModels = dict[str, dict[str, tuple[str, str]]]

FAILED = frozenset({AgentState.FAILED, AgentState.RATE_LIMITED, AgentState.BUDGET_EXCEEDED})
NOT_RUN = frozenset({AgentState.SKIPPED, AgentState.CANCELLED, AgentState.PENDING})


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def _timestamp(ts: float) -> str:
    """ISO 8601 without a zone, as the schema's pattern requires (UTC)."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _failure_body(agent: AgentResult) -> str:
    lines = [
        f"attempt {a.attempt}: {a.state.value}: {a.error or '(no message)'}"
        for a in agent.attempts
        if a.error or a.state is not AgentState.COMPLETED
    ]
    if not lines:
        lines = [agent.error or agent.state.value]
    return "\n".join(lines)


def _testcase(suite: ET.Element, wf: WorkflowResult, agent: AgentResult) -> None:
    case = ET.SubElement(
        suite, "testcase", name=agent.agent_id, classname=wf.key, time=_seconds(agent.duration_s)
    )
    if agent.state in FAILED:
        last_type = next((a.error_type for a in reversed(agent.attempts) if a.error_type), None)
        failure = ET.SubElement(
            case,
            "failure",
            message=agent.error or agent.state.value,
            type=last_type or agent.state.value,
        )
        failure.text = _failure_body(agent)
    elif agent.state in NOT_RUN:
        ET.SubElement(case, "skipped", message=agent.error or agent.state.value)


def _properties(suite: ET.Element, wf: WorkflowResult, models: dict[str, tuple[str, str]]) -> None:
    props = ET.SubElement(suite, "properties")

    def prop(name: str, value: object) -> None:
        ET.SubElement(props, "property", name=name, value=str(value))

    prop("state", wf.state.value)
    prop("cost_usd", decimal_text(wf.cost_usd))
    prop("tokens", wf.usage.total_tokens)
    if wf.reason:
        prop("reason", wf.reason)
    for agent_id, agent in wf.agents.items():
        model, module = models.get(agent_id, ("", ""))
        prop(f"{agent_id}.state", agent.state.value)
        prop(f"{agent_id}.tokens", agent.usage.total_tokens)
        prop(f"{agent_id}.input_tokens", agent.usage.input_tokens)
        prop(f"{agent_id}.output_tokens", agent.usage.output_tokens)
        prop(f"{agent_id}.cost_usd", decimal_text(agent.cost_usd))
        prop(f"{agent_id}.attempts", len(agent.attempts))
        if model:
            prop(f"{agent_id}.model", model)
        if module:
            prop(f"{agent_id}.module", module)


def agent_models(jobs: Iterable[WorkflowJob]) -> AgentModels:
    """Each agent's model and module, from the jobs a run executed."""
    return {
        job.key: {a.id: (str(a.model), a.module or "") for a in job.spec.agents.values()}
        for job in jobs
    }


def junit_tree(
    result: RunResult, models: AgentModels | None = None, *, hostname: str | None = None
) -> ET.ElementTree[ET.Element]:
    """The JUnit document; ``models`` maps workflow key → agent id → (model, module)."""
    host = hostname or socket.gethostname() or "localhost"
    root = ET.Element("testsuites")
    for index, wf in enumerate(result.workflows):
        agents = list(wf.agents.values())
        suite = ET.SubElement(
            root,
            "testsuite",
            name=wf.key,
            package=wf.name,
            id=str(index),
            timestamp=_timestamp(wf.started_at),
            hostname=host,
            tests=str(len(agents)),
            failures=str(sum(1 for a in agents if a.state in FAILED)),
            errors="0",
            skipped=str(sum(1 for a in agents if a.state in NOT_RUN)),
            time=_seconds(wf.ended_at - wf.started_at),
        )
        _properties(suite, wf, (models or {}).get(wf.key, {}))
        for agent in agents:
            _testcase(suite, wf, agent)
        ET.SubElement(
            suite, "system-out"
        ).text = f"workflow {wf.name} ({wf.path}): {wf.state.value}"
        ET.SubElement(suite, "system-err").text = wf.reason or ""
    return ET.ElementTree(root)


def write_junit(result: RunResult, path: Path, models: AgentModels | None = None) -> None:
    """Write the JUnit file (UTF-8, with an XML declaration), creating its directory; a
    new file is readable by its owner only (it holds the agents' errors)."""
    tree = junit_tree(result, models)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True)
    with open_private(path) as fh:
        fh.write(document.decode("utf-8"))
