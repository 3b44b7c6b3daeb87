"""Text from outside cannot drive the terminal: model output, tool calls and results, and a
provider's error body full of escape sequences print as visible characters everywhere aoe
prints for people, while ``--json`` and the ledger keep every character."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: Escape sequences a hostile document can put in a model's answer, and what they do.
CORPUS = "".join(
    [
        "A\x1b[2J\x1b[H",  # CSI: clear the screen, cursor home
        "\x1b]0;pwned\x07",  # OSC 0: retitle the window, ended by BEL
        "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 hyperlink, ST
        "\x1bP1$r0m\x1b\\",  # DCS
        "\x1b_apc\x1b\\",  # APC
        "\x9b31m\x9d0;c1\x9c\x85",  # C1: CSI, OSC, ST, NEL
        "\u202eevil\u202c \u2066iso\u2069",  # bidi override and isolate
        "ok\rFAKE\x08\x08\x7f\x00\x0b\x0c",  # CR, backspace, DEL, NUL, VT, FF
        " [link=http://evil.example/]markup[/link] [red]x[/red]",  # Rich markup
        "\n12:00:00 hostile/talk: COMPLETED in 0.01s",  # a fake progress line
    ]
)
#: A tool name a model can invent: it reaches the live view and the tool log.
TOOL_NAME = "\x1b]0;pwned\x07\x1b[2J"

#: Characters no terminal output of aoe may hold (\n and \t are layout).
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: What a hostile sequence still looks like once obeyed (for a terminal that Rich draws on).
_MARKERS = ("\x1b[2J", "\x1b]0;", "\x1b]8;", "\x1bP", "\x1b_", "\x9b", "\x9d", "\u202e", "\x07")


class _Provider(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose model asks for tools, one of them invented,
    then fails with an error body full of escape sequences."""

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if any(m["role"] == "tool" for m in request["messages"]):
            self._json(400, {"error": {"message": CORPUS, "type": "invalid_request_error"}})
            return
        calls = [
            {"id": "c1", "type": "function",
             "function": {"name": "echo", "arguments": json.dumps({"q": CORPUS})}},
            {"id": "c2", "type": "function", "function": {"name": TOOL_NAME, "arguments": "{}"}},
        ]  # fmt: skip
        self._json(200, {
            "id": "x", "object": "chat.completion", "created": 0, "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, "tool_calls": calls}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })  # fmt: skip

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Path]:
    """A workflow whose simulated agent answers CORPUS and whose other agent talks to a
    loopback model that calls a tool returning CORPUS, invents a tool, then errors."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    module = f"hostile_tools_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(f"def echo(q=''):\n    return {CORPUS!r}\n")
    (tmp_path / "aoe.yaml").write_text(
        "providers:\n  evil: {type: openai, base_url: "
        f"'http://127.0.0.1:{server.server_address[1]}/v1'}}\n"
        "pricing:\n  evil/m: {input_per_mtok: 0, output_per_mtok: 0}\n"
    )
    workflow = {
        "version": 1,
        "name": "hostile",
        "allow_partial_completion": True,
        "max_failure_rate": 1,
        "agents": {
            "talk": {"model": "sim/talker", "prompt": "hi", "simulate": {"output": CORPUS}},
            "tooly": {"model": "evil/m", "prompt": "hi", "tools": ["echo"],
                      "retry": {"max_retries": 0}},
        },
        "tools": {"echo": {"description": "echo", "python": f"{module}:echo",
                           "parameters": {"type": "object"}}},
    }  # fmt: skip
    path = tmp_path / "hostile.yaml"
    path.write_text(json.dumps(workflow))  # JSON is YAML; every control char as \\uXXXX
    yield path
    server.shutdown()
    server.server_close()


def _aoe(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "aoe", *args],
        capture_output=True, cwd=cwd, timeout=60, check=False,
        env={**os.environ, "CI": "1", **(env or {})},
    )  # fmt: skip
    return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8")


def _clean(text: str) -> None:
    found = _FORBIDDEN.search(text)
    assert found is None, (found.group(), text[max(0, found.start() - 80) : found.end() + 80])


def _run_id(cwd: Path) -> str:
    code, out, _ = _aoe("runs", "--json", cwd=cwd)
    assert code == 0
    return str(json.loads(out)["runs"][0]["run_id"])


def test_plain_progress_summary_and_show_print_escape_sequences_as_text(hostile: Path) -> None:
    """`aoe run --no-live` (progress and summary) and `aoe show` hold none of the controls,
    no fake progress line, and show ESC as a visible ␛; `--json` and the ledger keep the
    exact text of the answer, the tool calls and their results."""
    cwd = hostile.parent
    code, out, err = _aoe("run", str(hostile), "--no-live", cwd=cwd)
    assert code == 4, err  # partial: the tool agent failed on the error body
    for text in (out, err):
        _clean(text)
    assert "␛[2J" in err  # the error body, as the progress line reports it
    assert not any(line.startswith("12:00:00 hostile/talk") for line in err.splitlines())
    run_id = _run_id(cwd)
    code, shown, _ = _aoe("show", run_id, cwd=cwd)
    assert code == 0
    _clean(shown)
    assert "␛]0;pwned␇" in shown  # the invented tool name and the answer, visible
    assert "\x1b]8;" not in shown  # the markup link made no hyperlink
    code, document, _ = _aoe("show", run_id, "--json", cwd=cwd)
    _clean(document.replace("\n", ""))  # JSON writes the controls as \\u escapes
    detail = json.loads(document)
    agents = {a["agent_id"]: a for w in detail["workflows"] for a in w["agents"]}
    assert agents["talk"]["output"] == CORPUS
    logged = agents["tooly"]["calls"][0]["tool_calls"]
    assert json.loads(logged[0]["arguments"]) == {"q": CORPUS}
    assert logged[0]["result"] == CORPUS
    assert logged[1]["name"] == TOOL_NAME
    assert CORPUS in agents["tooly"]["attempts"][0]["error"]
    with contextlib.closing(sqlite3.connect(os.environ["AOE_DB"])) as db:
        outputs = [json.loads(row[0]) for row in db.execute("SELECT output FROM outputs")]
        errors = [row[0] for row in db.execute("SELECT error FROM attempts")]
        logs = [json.loads(row[0]) for row in db.execute("SELECT tool_calls FROM calls")]
    assert CORPUS in outputs
    assert any(CORPUS in (error or "") for error in errors)
    assert any(entry.get("result") == CORPUS for log in logs for entry in log)


def test_run_json_keeps_the_exact_text_and_prints_no_raw_controls(hostile: Path) -> None:
    """`aoe run --json` decodes to the exact answer; its bytes hold no raw controls."""
    code, out, _ = _aoe("run", str(hostile), "--json", cwd=hostile.parent)
    assert code == 4
    _clean(out.replace("\n", ""))
    result = json.loads(out)
    agents = result["workflows"][0]["agents"]
    assert agents["talk"]["output"] == CORPUS


def test_github_summary_and_annotations_hold_no_controls(hostile: Path, tmp_path: Path) -> None:
    """The job summary and ::error annotations show hostile text, never obey it."""
    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    _aoe("run", str(hostile), "--no-live", cwd=hostile.parent, env=env)
    _clean(summary.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"version": 1, "agents": {"a": {"model": "sim/x", "prompt": "p"}},
                               CORPUS: 1}))  # fmt: skip
    code, out, err = _aoe("validate", str(bad), cwd=tmp_path, env=env)
    assert code == 2
    assert out.startswith("::error ")
    _clean(out)
    _clean(err)
    code, _, err = _aoe("--debug", "run", str(bad), cwd=tmp_path, env=env)
    assert code == 2
    assert "Traceback" in err
    _clean(err)


def _terminal_bytes(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``aoe ARGS`` on a 120x40 pseudo-terminal; everything it wrote, undecoded."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "COLUMNS")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aoe", *args], stdin=slave, stdout=slave, stderr=slave,
        env={**env, "TERM": "xterm-256color"}, cwd=cwd, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    return proc.wait(timeout=10), b"".join(chunks).decode("utf-8")


def test_the_live_view_on_a_terminal_draws_no_hostile_sequence(hostile: Path) -> None:
    """On a real terminal, the live view (with the invented tool name as the last tool)
    and the summary draw none of the hostile sequences: only Rich's own."""
    code, drawn = _terminal_bytes(["run", str(hostile)], hostile.parent)
    assert code == 4, drawn[-2000:]
    assert "\x1b[?25l" in drawn  # the live view was drawn
    assert "␛]0;pwned␇" in drawn  # the tool name, visible in the live view
    for marker in _MARKERS:
        assert marker not in drawn, repr(marker)
