"""``--events``: JSON Lines a user can tail and parse against a documented schema."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema

from aoe.monitor import events as events_module
from aoe.monitor.events import Event
from aoe.monitor.jsonl import JsonlSink, event_record
from tests.monitor.events_data import every_event


def _schema() -> dict[str, object]:
    text = resources.files("aoe").joinpath("schemas/events.schema.json").read_text("utf-8")
    return dict(json.loads(text))


def test_every_event_kind_validates_against_the_schema(tmp_path: Path) -> None:
    """Each line written for each kind of event passes events.schema.json."""
    path = tmp_path / "ev" / "events.jsonl"
    sink = JsonlSink.open(path)
    for event in every_event():
        sink.handle(event)
    sink.close()
    validator = jsonschema.Draft202012Validator(_schema())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(every_event())
    for line in lines:
        record = json.loads(line)
        validator.validate(record)
        assert record["version"] == 2
    kinds = {json.loads(line)["kind"] for line in lines}
    declared = {_kind(cls) for cls in _event_classes()}
    assert kinds == declared


def _event_classes() -> list[type[Event]]:
    """The concrete events (the envelope's levels, Event to AttemptEvent, are no kind)."""
    levels = {
        Event,
        events_module.WorkflowEvent,
        events_module.AgentEvent,
        events_module.AttemptEvent,
    }
    return [
        c
        for c in vars(events_module).values()
        if isinstance(c, type) and issubclass(c, Event) and c not in levels
    ]


def _kind(cls: type[Event]) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in cls.__name__).lstrip("_")


def test_schema_covers_exactly_the_event_classes() -> None:
    """The schema has one definition per event class, so a new event needs a schema entry."""
    schema = _schema()
    refs = {branch["$ref"].rsplit("/", 1)[1] for branch in schema["oneOf"]}  # type: ignore[attr-defined]
    assert refs == {_kind(c) for c in _event_classes()}


def test_a_record_that_breaks_the_schema_is_rejected() -> None:
    """The schema is strict: a missing field or an unknown kind fails validation."""
    validator = jsonschema.Draft202012Validator(_schema())
    record = event_record(every_event()[0])
    del record["simulate"]
    assert not validator.is_valid(record)
    assert not validator.is_valid({**event_record(every_event()[0]), "kind": "mystery"})


def test_each_line_is_flushed_at_once(tmp_path: Path) -> None:
    """A reader sees every event as soon as it is handled (tail -f works)."""
    path = tmp_path / "events.jsonl"
    sink = JsonlSink.open(path)
    try:
        for count, event in enumerate(every_event()[:3], 1):
            sink.handle(event)
            assert len(path.read_text(encoding="utf-8").splitlines()) == count
    finally:
        sink.close()


def test_workflow_counts_are_an_object_and_usage_is_nested() -> None:
    """Counts read as {state: n}; usage keeps all five token figures."""
    records = [event_record(e) for e in every_event()]
    finished = next(r for r in records if r["kind"] == "workflow_finished")
    assert finished["counts"] == {"COMPLETED": 1, "BUDGET_EXCEEDED": 1, "SKIPPED": 1}
    call = [r for r in records if r["kind"] == "api_call"][1]
    assert call["usage"] == {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_read_tokens": 30,
        "cache_write_tokens": 10,
        "reasoning_tokens": 5,
    }


async def test_on_the_loop_each_line_is_written_before_the_loop_moves_on(tmp_path: Path) -> None:
    """Events of one turn of the loop are written together, before any other task runs."""
    import asyncio

    path = tmp_path / "events.jsonl"
    sink = JsonlSink.open(path)
    seen: list[int] = []

    async def reader() -> None:
        seen.append(len(path.read_text(encoding="utf-8").splitlines()))

    try:
        for event in every_event()[:3]:
            sink.handle(event)
        await asyncio.wait_for(asyncio.create_task(reader()), timeout=5)
        sink.handle(every_event()[3])
        await asyncio.wait_for(asyncio.create_task(reader()), timeout=5)
    finally:
        sink.close()
    assert seen == [3, 4]
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4
