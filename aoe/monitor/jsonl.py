"""``--events PATH``: every event as one JSON object per line (``schemas/events.schema.json``).

Each line carries ``version`` and ``kind`` (the event class in snake case), the envelope
(``run_id``, and ``workflow``, ``agent``, ``attempt`` where the event has them), ``at``
(epoch seconds) and the event's own fields; money is an exact decimal string. Lines are
flushed as they are written,
so ``tail -f`` follows a run. Events hold no prompts, outputs or keys, and this sink adds
none: it writes the event's fields and nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from aoe.cost.money import decimal_text
from aoe.ledger.files import open_private
from aoe.monitor.events import Envelope, Event, WorkflowFinished

EVENTS_VERSION = 2


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _envelope(envelope: Envelope) -> dict[str, Any]:
    fields = (
        ("run_id", envelope.run_id),
        ("workflow", envelope.workflow),
        ("agent", envelope.agent),
        ("attempt", envelope.attempt),
    )
    return {name: value for name, value in fields if value is not None}


def event_record(event: Event) -> dict[str, Any]:
    """The JSON object written for ``event``."""
    record: dict[str, Any] = {"version": EVENTS_VERSION, "kind": event.kind}
    record.update(_envelope(event.envelope))
    for f in dataclasses.fields(event):
        if f.name != "envelope":
            record[f.name] = _plain(getattr(event, f.name))
    if isinstance(event, WorkflowFinished):
        record["counts"] = dict(event.counts)
    return record


class JsonlSink:
    """Writes each event to a file as a JSON line, flushed at once."""

    def __init__(self, stream: TextIO, *, owns: bool = False) -> None:
        self._stream = stream
        self._owns = owns

    @classmethod
    def open(cls, path: Path) -> JsonlSink:
        """Append to ``path`` (creating its directory, and the file 0600); line-buffered."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(open_private(path, append=True, buffering=1), owns=True)

    def handle(self, event: Event) -> None:
        self._stream.write(
            json.dumps(
                event_record(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
            + "\n"
        )
        self._stream.flush()

    def close(self) -> None:
        if self._owns:
            self._stream.close()
