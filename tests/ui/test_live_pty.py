"""`aoe run` on a real terminal: the live view as a pseudo-terminal of 80x24 or 160x45 gets it.

Each test starts `python -m aoe run ... --simulate` attached to a pty of that size (no CI
variable, TERM=xterm-256color), reads every byte it draws, and takes the stream apart the
way the terminal does: Rich's Live moves the cursor back up over the previous frame before
each redraw, so the stream is a series of frames, then the summary.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.cells import cell_len

ROOT = Path(__file__).resolve().parents[2]
SIZES = [pytest.param(80, 24, id="80x24"), pytest.param(160, 45, id="160x45")]

# What decides whether and how wide aoe and Rich draw; the test sets the terminal itself.
_TERMINAL_ENV = frozenset(
    {
        "CI",
        "COLUMNS",
        "LINES",
        "NO_COLOR",
        "FORCE_COLOR",
        "TERM",
        "TTY_COMPATIBLE",
        "TTY_INTERACTIVE",
        "GITHUB_ACTIONS",
        "JUPYTER_COLUMNS",
        "JUPYTER_LINES",
    }
)
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
_REDRAW = re.compile(r"\r(?:\x1b\[2K\x1b\[1A)*\x1b\[2K")  # back to the top of the last frame
_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FOOTER = re.compile(
    r"(\d+) running \| (\d+) calls \| (\d+) tool calls \| (\d+) tokens \| (\$[0-9.]+) \| [0-9.]+s"
)
_TOTAL = re.compile(r"total: (\d+) tokens, (\$[0-9.]+)")


@dataclass
class Screen:
    """What a run drew on the terminal: the live view's frames, then the summary."""

    code: int
    frames: list[list[str]]
    summary: str

    @property
    def last(self) -> list[str]:
        return self.frames[-1]

    def footer(self) -> tuple[int, int, int, int, str]:
        """running, calls, tool calls, tokens and cost, from the last frame's footer."""
        found = _FOOTER.search(" ".join(" ".join(self.last).split()))
        assert found, self.last
        running, calls, tools, tokens, cost = found.groups()
        return int(running), int(calls), int(tools), int(tokens), cost

    def total(self) -> tuple[int, str]:
        """Tokens and cost on the summary's total line."""
        found = _TOTAL.search(" ".join(self.summary.split()))
        assert found, self.summary
        return int(found[1]), found[2]


def _lines(text: str) -> list[str]:
    lines = _CSI.sub("", text).split("\r\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def run_on_terminal(args: list[str], *, cols: int, rows: int, cwd: Path) -> Screen:
    """Run ``aoe ARGS`` with stdin, stdout and stderr on a pty of ``cols`` x ``rows``."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in _TERMINAL_ENV}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aoe", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                pytest.fail(f"aoe {' '.join(args)} still drawing after 30 s")
            if not select.select([master], [], [], left)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed its end of the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    code = proc.wait(timeout=10)
    out = b"".join(chunks).decode()
    assert out.count(_HIDE_CURSOR) == out.count(_SHOW_CURSOR) == 1, out[-2000:]
    _, _, rest = out.partition(_HIDE_CURSOR)
    live, _, summary = rest.partition(_SHOW_CURSOR)
    frames = [_lines(frame) for frame in _REDRAW.split(live)]
    return Screen(code, [f for f in frames if f], "\n".join(_lines(summary)))


def _fits(screen: Screen, cols: int, rows: int) -> None:
    """No line is wider than the terminal; no frame but the last (drawn whole when the
    run ends) is taller, so every redraw lands exactly over the one before."""
    for frame in screen.frames:
        assert max(cell_len(line) for line in frame) <= cols, frame
    for frame in screen.frames[:-1]:
        assert len(frame) <= rows, frame


def _invoice_quick(tmp: Path) -> Path:
    """The README's example with its simulated latencies cut to a quarter, so the run takes
    about a second; its agent and tool files are linked beside it."""
    text = (ROOT / "workflows" / "invoice-processing.yaml").read_text()
    quick = re.sub(r"latency_s: ([0-9.]+)", lambda m: f"latency_s: {float(m[1]) / 4:g}", text)
    path = tmp / "invoice-processing.yaml"
    path.write_text(quick)
    for folder in ("agents", "tools"):
        (tmp / folder).symlink_to(ROOT / "workflows" / folder, target_is_directory=True)
    return path


@pytest.mark.parametrize(("cols", "rows"), SIZES)
def test_the_example_runs_live_and_ends_with_every_agent_completed(
    cols: int, rows: int, tmp_path: Path
) -> None:
    """`aoe run workflows/invoice-processing.yaml --simulate` on a terminal: the live view
    shows the workflow's bar, the agents as they run and the totals, fits the screen, and
    ends with every agent COMPLETED and the same cost as the summary; exit code 0."""
    wf = _invoice_quick(tmp_path)
    screen = run_on_terminal(["run", str(wf), "--simulate"], cols=cols, rows=rows, cwd=tmp_path)
    assert screen.code == 0, screen.summary
    _fits(screen, cols, rows)
    assert any(" RUNNING " in line for frame in screen.frames[:-1] for line in frame)
    bar = screen.last[0]
    assert bar.startswith("invoice-processing ")
    assert bar.endswith("5/5 completed")
    assert "━" * 30 in bar
    assert sum(" COMPLETED " in line for line in screen.last) == 5
    running, calls, tool_calls, tokens, cost = screen.footer()
    # 5 agents, and a second turn for the two that call tools: 7 calls; 3 tool calls
    assert (running, calls, tool_calls) == (0, 7, 3)
    assert (tokens, cost) == screen.total()
    assert "exit code 0" in " ".join(screen.summary.split())


def _batch(tmp: Path) -> Path:
    """40 agents (24 at once, then 16 more), a budget, and a simulator key limited to 20
    calls at once, so the rate-limit and cost tables have something to show."""
    (tmp / "aoe.yaml").write_text(
        "providers:\n  sim: {type: sim, limits: {requests_per_minute: 1000,"
        " tokens_per_minute: 500000, concurrent_requests: 20}}\n"
    )
    modules = ("accounts_payable", "procurement", "inventory", "general_ledger")
    agents = []
    for i in range(40):
        needs = f"    needs: [reconcile_{i - 24:02d}]\n" if i >= 24 else ""
        latency = 0.4 if i < 24 else 0.2
        agents.append(
            f"  reconcile_{i:02d}:\n    module: {modules[i % 4]}\n{needs}"
            f"    prompt: Reconcile the open items of ledger account {1000 + i}.\n"
            f"    simulate: {{latency_s: {latency}, output_tokens: 40}}\n"
        )
    path = tmp / "batch.yaml"
    path.write_text(
        "version: 1\nname: reconcile-batch\nbudget_usd: 1.0\nmax_parallel_agents: 30\n"
        "defaults:\n  model: openai/gpt-4o-mini\n  max_tokens: 200\nagents:\n" + "".join(agents)
    )
    return path


@pytest.mark.parametrize(("cols", "rows"), SIZES)
def test_a_batch_under_rate_limits_and_a_budget_runs_live_to_the_end(
    cols: int, rows: int, tmp_path: Path
) -> None:
    """Forty agents under a rate limit and budgets on a terminal: every frame fits the
    screen, the view ends with all forty completed, its rate-limit and cost tables, and
    the footer's cost and tokens equal the summary's; exit code 0."""
    wf = _batch(tmp_path)
    args = ["run", str(wf), "--simulate", "--budget", "2"]
    screen = run_on_terminal(args, cols=cols, rows=rows, cwd=tmp_path)
    assert screen.code == 0, screen.summary
    _fits(screen, cols, rows)
    assert screen.last[0].endswith("40/40 completed")
    assert sum(" COMPLETED " in line for line in screen.last) == 6  # the latest six
    assert any(line.startswith("rate limits") and "cost" in line for line in screen.last)
    running, calls, _, tokens, cost = screen.footer()
    assert (running, calls) == (0, 40)
    assert (tokens, cost) == screen.total()
    if cols >= 160:  # on a wide, tall terminal everything of a busy moment is on screen
        busy = [f for f in screen.frames[:-1] if any("more running" in line for line in f)]
        assert busy, "no frame caught more agents running than rows"
        text = "\n".join(busy[0])
        assert re.search(r"\.\.\. and \d+ more running", text)
        assert _FOOTER.search(text)
        assert re.search(r" sim +requests_per_minute +\d+ / 1000 ", text)
        assert re.search(r" concurrent +\d+ / 20 ", text)
        assert re.search(r" run +\$[0-9.]+ +\$[0-9.]+ +\$2\.0000 ", text)
        assert re.search(r" workflow:reconcile-batch +\$[0-9.]+ +\$[0-9.]+ +\$1\.0000 ", text)
