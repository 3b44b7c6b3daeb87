"""A run shown as it goes: the live view on a terminal, plain lines otherwise.

``run_with_progress`` executes a prepared run with its progress on stderr and cancels it
cleanly on SIGINT or SIGTERM (the run then ends CANCELLED, exit 130).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from aoe.app.prepare import PreparedRun
from aoe.app.run import RunHandle
from aoe.engine.results import RunResult
from aoe.monitor.events import EventSink
from aoe.monitor.outputs import RunOutputs
from aoe.ui.plain import PlainProgress

if TYPE_CHECKING:  # Rich and the live view load only when something is drawn with them
    from rich.console import Console

    from aoe.ui.live import LiveView


def console(*, stderr: bool = False) -> Console:
    """The console aoe draws on (stdout, or stderr for progress)."""
    from rich.console import Console

    return Console(stderr=stderr)


def run_with_progress(prepared: PreparedRun, *, live: bool, outputs: RunOutputs) -> RunResult:
    """Run ``prepared`` to its end, drawing progress on stderr."""
    return asyncio.run(_execute(prepared, live=live, outputs=outputs))


async def _execute(prepared: PreparedRun, *, live: bool, outputs: RunOutputs) -> RunResult:
    sinks: list[EventSink] = []
    view: LiveView | None = None
    if live:
        from aoe.ui.live import LiveView

        view = LiveView(console(stderr=True))
        sinks.append(view)
    else:
        sinks.append(PlainProgress(sys.stderr))
    sinks.extend(outputs.sinks)
    handle = RunHandle(prepared, sinks)
    if view is not None:
        view.bind(handle)
    outputs.bind(handle)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handle.cancel)
    try:
        if view is None:
            return await handle.execute()
        with view.live() as screen:
            refresher = asyncio.create_task(view.refresh_forever(screen))
            try:
                return await handle.execute()
            finally:
                refresher.cancel()
                screen.refresh()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
