"""``command:`` tools: real subprocesses, no shell, arguments per argv element, timeouts kill."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from aoe.tools import Toolbox
from tests.tools.specs import call, tool_spec

PRINT_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"


async def _run(tmp_path: Path, argv: list[str], arguments: dict[str, object], *,
               timeout_s: float = 5.0) -> tuple[str, bool]:
    box = await Toolbox.open([tool_spec(tmp_path, "cmd", "command", {"argv": argv},
                                        timeout_s=timeout_s)])
    try:
        result = await box.run(call("cmd", arguments))
    finally:
        await box.aclose()
    return result.content, result.is_error


async def test_each_argv_element_is_one_argument_and_no_shell_runs(tmp_path: Path) -> None:
    """A value with spaces and shell syntax arrives as exactly one argument, untouched."""
    hostile = "ACME; touch pwned && echo $(id)"
    content, failed = await _run(
        tmp_path, ["python3", "-c", PRINT_ARGV, "--vendor={{ args.name }}", "{{ args.qty }}"],
        {"name": hostile, "qty": 12},
    )
    assert not failed
    assert json.loads(content) == [f"--vendor={hostile}", "12"]
    assert not (tmp_path / "pwned").exists()


async def test_the_arguments_also_arrive_as_json_on_stdin(tmp_path: Path) -> None:
    """A program can read the whole call as one JSON object from stdin."""
    content, _ = await _run(tmp_path, ["python3", "-c", "import sys; print(sys.stdin.read())"],
                            {"po_number": "PO-778812", "lines": [1, 2]})
    assert json.loads(content) == {"po_number": "PO-778812", "lines": [1, 2]}


async def test_a_non_zero_exit_is_an_error_result_with_stderr(tmp_path: Path) -> None:
    """The exit code and what the program said on stderr reach the model."""
    script = "import sys; sys.stderr.write('PO-1 not found'); sys.exit(3)"
    content, failed = await _run(tmp_path, ["python3", "-c", script], {})
    assert failed
    assert "exited with code 3" in content
    assert "PO-1 not found" in content


async def test_a_timeout_kills_the_process(tmp_path: Path) -> None:
    """A command past its timeout_s is killed, not left running, and reported as an error."""
    pid_file = tmp_path / "pid"
    script = (f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
              "time.sleep(30)")
    started = time.perf_counter()
    content, failed = await _run(tmp_path, [sys.executable, "-c", script], {}, timeout_s=0.5)
    assert time.perf_counter() - started < 5
    assert failed
    assert "did not finish within timeout_s=0.5" in content
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


async def test_output_is_cut_to_its_size_and_says_so(tmp_path: Path) -> None:
    """Output past the byte limit is truncated with a note of the limit."""
    content, failed = await _run(tmp_path, ["python3", "-c", "print('x' * 100000)"], {})
    assert not failed
    assert content.endswith("[truncated to 8192 bytes]")


async def test_a_relative_program_is_found_beside_the_workflow(tmp_path: Path) -> None:
    """bin/tool.sh means the file next to the workflow; a missing program is an error result."""
    script = tmp_path / "bin" / "stock.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho \"on hand: $1\"\n")
    script.chmod(0o755)
    content, failed = await _run(tmp_path, ["bin/stock.sh", "{{ args.sku }}"], {"sku": "MRO-8840"})
    assert (content.strip(), failed) == ("on hand: MRO-8840", False)
    content, failed = await _run(tmp_path, ["no-such-program-aoe"], {})
    assert failed
    assert "'no-such-program-aoe' was not found" in content
