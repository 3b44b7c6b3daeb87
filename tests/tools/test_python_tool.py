"""``python:`` tools: a user's function found beside the workflow, called with the arguments."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from aoe.cli.main import main
from aoe.tools import Toolbox
from aoe.tools.python_tool import load_function
from tests.tools.specs import call, module_name, tool_spec

SOURCE = '''
import asyncio
import threading

def lookup(name, country="US"):
    return {"name": name, "country": country, "thread": threading.current_thread().name}

async def lookup_async(name):
    await asyncio.sleep(0)
    return f"async {name}"

def plain_text():
    return "just text"

def stuck():
    threading.Event().wait(30)

NOT_A_FUNCTION = 42
'''


def _package(tmp_path: Path) -> str:
    """A package ``<unique>/vendors.py`` beside the (pretend) workflow file; returns its name."""
    name = module_name("erp")
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "vendors.py").write_text(SOURCE)
    return name


async def test_a_sync_function_gets_keyword_arguments_and_runs_in_a_thread(tmp_path: Path) -> None:
    """package.module:function is found from the workflow's directory; a dict comes back as JSON."""
    package = _package(tmp_path)
    spec = tool_spec(tmp_path, "lookup", "python", {"function": f"{package}.vendors:lookup"})
    box = await Toolbox.open([spec])
    try:
        result = await box.run(call("lookup", {"name": "ACME", "country": "DE"}))
    finally:
        await box.aclose()
    assert not result.is_error, result.content
    assert result.content.startswith('{"name": "ACME", "country": "DE", "thread": ')
    assert threading.main_thread().name not in result.content


async def test_an_async_function_is_awaited_and_text_is_passed_as_is(tmp_path: Path) -> None:
    """Coroutine functions are awaited on the loop; a string result is not JSON-quoted."""
    package = _package(tmp_path)
    specs = [
        tool_spec(tmp_path, "a", "python", {"function": f"{package}.vendors:lookup_async"}),
        tool_spec(tmp_path, "t", "python", {"function": f"{package}.vendors:plain_text"}),
    ]
    box = await Toolbox.open(specs)
    results = await box.run_all([call("a", {"name": "ACME"}, "1"), call("t", {}, "2")])
    await box.aclose()
    assert [r.content for r in results] == ["async ACME", "just text"]


async def test_an_unexpected_argument_is_an_error_result(tmp_path: Path) -> None:
    """Arguments the function does not take are reported to the model (no schema given)."""
    package = _package(tmp_path)
    spec = tool_spec(tmp_path, "lookup", "python", {"function": f"{package}.vendors:lookup"})
    box = await Toolbox.open([spec])
    result = await box.run(call("lookup", {"vendor": "ACME"}))
    await box.aclose()
    assert result.is_error
    assert "TypeError" in result.content


def test_load_function_says_what_is_wrong_with_a_target(tmp_path: Path) -> None:
    """A missing module, a missing name and a non-callable each raise a clear error."""
    package = _package(tmp_path)
    with pytest.raises(ModuleNotFoundError):
        load_function(f"{package}.nope:lookup", tmp_path)
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        load_function(f"{package}.vendors:missing", tmp_path)
    with pytest.raises(TypeError, match="not a function"):
        load_function(f"{package}.vendors:NOT_A_FUNCTION", tmp_path)
    assert callable(load_function(f"{package}.vendors:lookup", tmp_path))


def test_the_shipped_erp_tools_answer_from_the_csv_data() -> None:
    """The example tools find the vendor, the PO lines and the goods received."""
    workflows = Path(__file__).resolve().parents[2] / "workflows" / "tools"
    lookup = load_function("erp_tools.vendors:lookup", workflows)
    assert lookup(name="acme industrial supply, inc")["vendor_id"] == "V-10042"
    assert lookup(name="Unknown Corp") == {"found": False, "searched_for": "Unknown Corp"}
    order = load_function("erp_tools.purchasing:purchase_order", workflows)("PO-778812")
    assert [line["unit_price"] for line in order["lines"]] == [18.5, 6.25, 41.0]
    receipts = load_function("erp_tools.purchasing:goods_receipts", workflows)("PO-781004")
    assert receipts["lines"] == [{"line": 1, "quantity_received": 5.0},
                                 {"line": 2, "quantity_received": 4.0}]


TWO_FOLDERS_WORKFLOW = """
version: 1
name: two-folders
agents:
  check:
    model: openai/gpt-4o-mini
    prompt: Look ACME up in both vendor masters
    tools: [lookup_a, lookup_b]
    simulate:
      tool_calls:
        - {turn: 1, name: lookup_a, arguments: {name: ACME}}
        - {turn: 1, name: lookup_b, arguments: {name: ACME}}
tools:
  lookup_a: {uses: a/tools.yaml}
  lookup_b: {uses: b/tools.yaml}
"""


def _erp_tools_in(folder: Path) -> None:
    """``folder/tools.yaml`` declaring ``lookup_<folder>`` from its own ``erp_tools`` package,
    whose function answers with the folder's name from a sibling module, imported at the
    top and lazily in the function."""
    package = folder / "erp_tools"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_where.py").write_text(f"WHERE = {folder.name!r}\n")
    (package / "_lazy.py").write_text(f"FOLDER = {folder.name!r}\n")
    (package / "vendors.py").write_text(
        "from ._where import WHERE\n\n"
        "def lookup(name):\n"
        "    from . import _lazy\n"
        "    return f'{name} in {WHERE}, lazily {_lazy.FOLDER}'\n"
    )
    (folder / "tools.yaml").write_text(
        f"version: 1\ntools:\n  lookup_{folder.name}:\n    description: Look a vendor up\n"
        "    python: erp_tools.vendors:lookup\n"
    )


def test_two_folders_with_a_package_of_the_same_name_each_get_their_own_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tools files in two folders that both ship erp_tools/vendors.py each call their own
    function in one run, relative imports included; sys.path is left as it was."""
    _erp_tools_in(tmp_path / "a")
    _erp_tools_in(tmp_path / "b")
    (tmp_path / "wf.yaml").write_text(TWO_FOLDERS_WORKFLOW)
    path_before = list(sys.path)
    code = main(["run", str(tmp_path / "wf.yaml"), "--simulate", "--json", "--no-live"])
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert code == 0
    assert main(["show", run_id, "--json"]) == 0
    (agent,) = json.loads(capsys.readouterr().out)["workflows"][0]["agents"]
    results = {t["name"]: t["result"] for c in agent["calls"] for t in c["tool_calls"]}
    assert results == {"lookup_a": "ACME in a, lazily a", "lookup_b": "ACME in b, lazily b"}
    assert sys.path == path_before
    assert "erp_tools" not in sys.modules


def test_an_absolute_import_of_the_folders_own_code_says_to_import_it_relatively(
    tmp_path: Path,
) -> None:
    """The folder is not on sys.path, so `from erp_tools._where import ...` inside erp_tools
    fails, and the error says to use a relative import."""
    _erp_tools_in(tmp_path)
    vendors = tmp_path / "erp_tools" / "vendors.py"
    vendors.write_text(vendors.read_text().replace("from ._where", "from erp_tools._where"))
    with pytest.raises(ModuleNotFoundError, match="import the folder's own modules relatively"):
        load_function("erp_tools.vendors:lookup", tmp_path)


def test_a_module_the_folder_does_not_have_is_imported_from_the_installed_packages(
    tmp_path: Path,
) -> None:
    """A target naming an installed module (here the standard library's) still imports."""
    assert load_function("json:dumps", tmp_path) is json.dumps


async def test_a_timed_out_sync_tool_never_holds_the_process_open(tmp_path: Path) -> None:
    """A sync function past its timeout is an error result, and its thread is a daemon, so
    Ctrl-C (or the end of the run) does not wait for it."""
    package = _package(tmp_path)
    spec = tool_spec(tmp_path, "stuck", "python", {"function": f"{package}.vendors:stuck"},
                     timeout_s=0.2)
    box = await Toolbox.open([spec])
    try:
        result = await box.run(call("stuck", {}))
    finally:
        await box.aclose()
    assert result.is_error
    assert "0.2" in result.content
    stuck = [t for t in threading.enumerate() if t.name == "aoe-tool"]
    assert stuck
    assert all(t.daemon for t in stuck)
