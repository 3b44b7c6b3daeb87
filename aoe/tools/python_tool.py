"""``python: package.module:function``: a function of the user's, called with the arguments.

The module is looked up in the directory of the file that declared the tool (a workflow or
a shared tools file), so ``python: erp_tools.vendors:lookup`` in
``workflows/tools/erp.yaml`` finds ``workflows/tools/erp_tools/vendors.py``. A name that
directory does not have is imported as usual (an installed package).

Each directory's code is imported under a private package of its own,
``_aoe_tools_<hash of the directory>`` (``erp_tools.vendors`` becomes
``_aoe_tools_1f0c...erp_tools.vendors`` in ``sys.modules``), so two folders that both
ship an ``erp_tools`` package each get their own functions in one process, and one
directory's modules are imported once however many tools name them. The directory is
never put on ``sys.path``, so it cannot shadow another tool's imports or aoe's. A
package's modules reach each other by relative imports (``from ._data import rows``),
at import time and in a function's lazy imports alike. An absolute import of the
folder's own code (``from erp_tools._data import rows``) does not find it; when the tool
is imported (by a run or ``aoe validate``), the error says to import it relatively.

Sync functions run in a worker thread; a return value that is not a string is sent as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aoe.spec.models import ToolSpec
from aoe.tools.base import ToolOutput, declared_in

PRIVATE_PREFIX = "_aoe_tools_"  # + a hash of the directory: the package its code lives in
_packages_lock = threading.Lock()  # one private package per directory, even across threads


def load_function(target: str, base_dir: Path) -> Callable[..., Any]:
    """Import ``module:function`` from ``base_dir`` (or an installed package); raise what
    the import raises."""
    module_name, _, attribute = target.partition(":")
    module = _import(module_name, base_dir)
    function = getattr(module, attribute, None)
    if function is None:
        raise AttributeError(f"module {module_name!r} has no attribute {attribute!r}")
    if not callable(function):
        raise TypeError(f"{target} is a {type(function).__name__}, not a function")
    return function  # type: ignore[no-any-return]


def _import(module_name: str, base_dir: Path) -> Any:
    """``module_name`` from ``base_dir`` under the directory's private package, or as-is
    when the directory has no such module or package."""
    directory = str(base_dir.resolve())
    if not _in_directory(module_name, directory):
        return importlib.import_module(module_name)
    package = _private_package(directory)
    try:
        return importlib.import_module(f"{package}.{module_name}")
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.startswith(package + "."):  # say it without the private name
            raise ModuleNotFoundError(
                f"No module named {missing.removeprefix(package + '.')!r} in {directory}",
                name=exc.name,
            ) from exc
        if _in_directory(missing, directory):  # an absolute import of the folder's own code
            raise ModuleNotFoundError(
                f"{exc}: it is in {directory}, which aoe does not put on sys.path; import "
                "the folder's own modules relatively ('from .sibling import name', "
                "'from ..module import name' in a subpackage)",
                name=exc.name,
            ) from exc
        raise


def _in_directory(module_name: str, directory: str) -> bool:
    """Whether the top-level module or package of ``module_name`` is in ``directory``."""
    top = module_name.partition(".")[0]
    return bool(top) and importlib.machinery.PathFinder.find_spec(top, [directory]) is not None


def _private_package(directory: str) -> str:
    """The name of the package whose ``__path__`` is ``directory``, created on first use."""
    name = PRIVATE_PREFIX + hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    with _packages_lock:
        if name not in sys.modules:
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [directory]
            sys.modules[name] = importlib.util.module_from_spec(spec)
            importlib.invalidate_caches()  # see files written since the folder was last listed
    return name


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
