"""``python: package.module:function``: a function of the user's, called with the arguments.

The directory of the file that declared the tool (a workflow or a shared tools file) is
put on ``sys.path`` before the import (and left there, so the function's own lazy imports
work), so ``python: erp_tools.vendors:lookup`` in ``workflows/tools/erp.yaml`` finds
``workflows/tools/erp_tools/vendors.py``. Sync
functions run in a worker thread; a return value that is not a string is sent as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aoe.spec.models import ToolSpec
from aoe.tools.base import ToolOutput, declared_in


def load_function(target: str, base_dir: Path) -> Callable[..., Any]:
    """Import ``module:function`` with ``base_dir`` on sys.path; raise what the import raises."""
    module_name, _, attribute = target.partition(":")
    directory = str(base_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
        importlib.invalidate_caches()
    module = importlib.import_module(module_name)
    function = getattr(module, attribute, None)
    if function is None:
        raise AttributeError(f"module {module_name!r} has no attribute {attribute!r}")
    if not callable(function):
        raise TypeError(f"{target} is a {type(function).__name__}, not a function")
    return function  # type: ignore[no-any-return]


class PythonTool:
    """Runs one ``python:`` tool; the function is imported on first use."""

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        self._function: Callable[..., Any] | None = None

    async def __call__(self, arguments: dict[str, Any]) -> ToolOutput:
        function = self._function
        if function is None:
            function = self._function = load_function(
                str(self.spec.target["function"]), declared_in(self.spec)
            )
        if inspect.iscoroutinefunction(function):
            value = await function(**arguments)
        else:
            value = await _in_daemon_thread(function, arguments)
            if inspect.isawaitable(value):
                value = await value
        return ToolOutput(_text(value))


async def _in_daemon_thread(function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """Run a sync tool on a thread of its own that never holds the process open.

    A timed-out or cancelled sync function cannot be stopped; on a daemon thread it is at
    least abandoned, so Ctrl-C still ends aoe at once (``asyncio.to_thread`` would make
    the interpreter wait for it at exit).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        try:
            value = function(**arguments)
        except BaseException as exc:  # handed to the awaiting task, which reports it
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(deliver, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, value, None)

    threading.Thread(target=work, name="aoe-tool", daemon=True).start()
    return await future


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
