"""Hypothesis strategies shared by the property tests.

``workflow_docs()`` draws valid workflow documents (plain data: a small DAG of agents with
prompts that read declared inputs and upstream outputs); ``mutated_docs()`` breaks them at
the data level (delete, insert or retype keys, change numbers) and ``mutated_texts()`` at
the text level (broken indentation, tabs, random bytes, cut lines), as a user's editor
or a bad merge might.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import strategies as st

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
MODELS = st.sampled_from(["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "sim/fast"])
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.text(max_size=12),
)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def workflow_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid workflow document: inputs, defaults and a DAG of 1..6 agents."""
    ids = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    inputs = draw(st.lists(NAMES, max_size=3, unique=True))
    doc: dict[str, Any] = {"version": 1, "name": draw(NAMES)}
    if inputs:
        doc["inputs"] = {name: {"type": "string", "default": f"value of {name}"} for name in inputs}
    if draw(st.booleans()):
        doc["budget_usd"] = draw(st.floats(0, 10, allow_nan=False))
    doc["defaults"] = {"model": draw(MODELS), "max_tokens": draw(st.integers(1, 4000))}
    agents: dict[str, Any] = {}
    for index, agent_id in enumerate(ids):
        earlier = ids[:index]
        needs = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        parts = [f"Step {agent_id}."]
        parts += [f"{{{{ inputs.{name} }}}}" for name in inputs[:1]]
        parts += [f"From {need}: {{{{ agents.{need}.output }}}}" for need in needs]
        agent: dict[str, Any] = {"prompt": "\n".join(parts)}
        if needs:
            agent["needs"] = needs
        if draw(st.booleans()):
            agent["priority"] = draw(st.integers(0, 10))
        if draw(st.booleans()):
            agent["retry"] = {
                "max_retries": draw(st.integers(0, 20)),
                "strategy": draw(
                    st.sampled_from(["immediate", "constant", "linear", "exponential"])
                ),
            }
        if draw(st.booleans()):
            agent["simulate"] = {"latency_s": draw(st.floats(0, 2, allow_nan=False))}
        if draw(st.booleans()):
            agent["output_schema"] = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        agents[agent_id] = agent
    doc["agents"] = agents
    return doc


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of a document."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated_docs(draw: st.DrawFn) -> Any:
    """A valid document with one to three data-level changes."""
    doc: Any = copy.deepcopy(draw(workflow_docs()))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            return draw(JSON)
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["delete", "insert", "retype", "number"]))
        if action == "delete":
            del parent[last]
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(JSON)
        elif action == "number":
            parent[last] = draw(st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=False)))
        else:
            parent[last] = draw(JSON)
    return doc


def dump(doc: Any) -> str:
    """YAML text of a document, in the block style people write."""
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@st.composite
def mutated_texts(draw: st.DrawFn) -> bytes:
    """The YAML text of a valid workflow, damaged as text."""
    lines = dump(draw(workflow_docs())).split("\n")
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, max(0, len(lines) - 1)))
        action = draw(st.sampled_from(["drop", "indent", "dedent", "tab", "cut", "dup", "junk"]))
        line = lines[index]
        if action == "drop":
            del lines[index]
        elif action == "indent":
            lines[index] = " " * draw(st.integers(1, 3)) + line
        elif action == "dedent":
            lines[index] = line.lstrip(" ")
        elif action == "tab":
            lines[index] = "\t" + line
        elif action == "cut":
            lines[index] = line[: draw(st.integers(0, len(line)))]
        elif action == "dup":
            lines.insert(index, line)
        else:
            lines.insert(index, draw(st.text(max_size=20)))
        if not lines:
            lines = [""]
    data = "\n".join(lines).encode("utf-8")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=8)) + data[at:]
    return data
