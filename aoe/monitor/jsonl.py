"""``--events PATH``: every event as one JSON object per line (``schemas/events.schema.json``).

Each line carries ``version`` and ``kind`` (the event class in snake case), the envelope
(``run_id``, and ``workflow``, ``agent``, ``attempt`` where the event has them), ``at``
(epoch seconds) and the event's own fields; money is an exact decimal string. Lines are
written by the end of the event loop's turn that made them, so ``tail -f`` follows a run.
Events hold no prompts, outputs or keys, and this sink adds none: it writes the event's
fields and nothing else. Each event is encoded once (``encode_event``); no other sink
needs its bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import orjson

from aoe.cost.money import decimal_text
from aoe.ledger.files import open_private
from aoe.monitor.events import Event, WorkflowFinished

EVENTS_VERSION = 2


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    """An event class's own fields, in declaration order (the envelope is flattened)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name != "envelope")
        _FIELD_NAMES[cls] = names
    return names


def _money(value: Any) -> Any:
    """What orjson cannot write itself: Decimal money as its exact text."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _fields(event: Event) -> dict[str, Any]:
    """The line's object before encoding: values may still be Decimal or dataclasses."""
    envelope = event.envelope
    record: dict[str, Any] = {
        "version": EVENTS_VERSION,
        "kind": event.kind,
        "run_id": envelope.run_id,
    }
    if envelope.workflow is not None:
        record["workflow"] = envelope.workflow
    if envelope.agent is not None:
        record["agent"] = envelope.agent
    if envelope.attempt is not None:
        record["attempt"] = envelope.attempt
    for name in _field_names(type(event)):
        record[name] = getattr(event, name)
    if isinstance(event, WorkflowFinished):
        record["counts"] = dict(event.counts)
    return record


def encode_event(event: Event) -> bytes:
    """``event`` as one JSON line (newline included), encoded once for every reader.

    orjson writes the event's dataclasses (``Usage``) and tuples itself; ``_money`` turns
    Decimal into its exact text. A float that is not finite becomes null.
    """
    return orjson.dumps(_fields(event), default=_money, option=orjson.OPT_APPEND_NEWLINE)


def event_record(event: Event) -> dict[str, Any]:
    """The JSON object written for ``event`` (read back from its line)."""
    record: dict[str, Any] = json.loads(encode_event(event))
    return record


class JsonlSink:
    """Writes each event to a file as a JSON line, flushed at once.

    On the event loop, the lines of one turn of the loop go out in one write when that
    turn ends (``call_soon``): a reader sees each line before the run does anything
    else, and 10,000 agents cost thousands of writes instead of 30,000 (one write to
    disk costs more than encoding the line). Off a loop, each line is written at once.
    """

    def __init__(self, stream: TextIO, *, owns: bool = False) -> None:
        self._stream = stream
        self._bytes = stream.buffer
        self._owns = owns
        self._pending: list[bytes] = []  # this turn's lines, written together when it ends

    @classmethod
    def open(cls, path: Path) -> JsonlSink:
        """Append to ``path`` (creating its directory, and the file 0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(open_private(path, append=True), owns=True)

    def handle(self, event: Event) -> None:
        pending = self._pending
        pending.append(encode_event(event))
        if len(pending) > 1:  # a write is already scheduled for the end of this turn
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing else runs before the caller reads
            self._flush()
            return
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        """One write (and flush) for the lines of the turn: the buffered writer would
        otherwise write to the file every 8 KB, each write a system call that also lets
        the ledger's thread take the interpreter."""
        pending, self._pending = self._pending, []
        if pending and not self._bytes.closed:
            self._bytes.write(b"".join(pending))
            self._bytes.flush()

    def close(self) -> None:
        self._flush()
        if not self._bytes.closed:
            self._bytes.flush()
        if self._owns:
            self._stream.close()
