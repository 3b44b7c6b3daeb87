"""Property tests: whatever is in a workflow file, loading it ends in a spec or our error."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

from aoe.errors import SpecError, UsageError
from aoe.spec.loader import load_workflow
from aoe.spec.models import WorkflowSpec
from tests.strategies import dump, mutated_docs, mutated_texts, workflow_docs

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(data: bytes) -> WorkflowSpec | None:
    """Load ``data`` as a file; return the spec, or None after one of our own errors."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "workflow.yaml"
        path.write_bytes(data)
        try:
            return load_workflow(path)
        except (SpecError, UsageError) as err:
            message = str(err)
        assert message  # every error has a message a person can read
        return None


@_SETTINGS
@given(workflow_docs())
def test_valid_documents_load(doc: dict[str, Any]) -> None:
    """A well-formed workflow loads, with every agent and its dependencies."""
    spec = _load(dump(doc).encode())
    assert spec is not None
    assert list(spec.agents) == list(doc["agents"])
    for agent_id, agent in doc["agents"].items():
        assert spec.agents[agent_id].needs == tuple(agent.get("needs", ()))


@_SETTINGS
@given(mutated_docs())
def test_mutated_documents_load_or_raise_spec_errors(doc: Any) -> None:
    """Deleted, added and retyped keys end in a spec or a SpecError, never a crash."""
    _load(dump(doc).encode())


@_SETTINGS
@given(mutated_texts())
def test_damaged_text_loads_or_raises_spec_errors(data: bytes) -> None:
    """Broken indentation, tabs, cut lines and random bytes never crash the loader."""
    _load(data)
