"""``http:`` tools against a real HTTP server on 127.0.0.1: templates, env headers, limits."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aoe.tools import Toolbox
from tests.tools.specs import call, tool_spec

SECRET = "erp-token-SECRET-42"


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.server.seen.append(  # type: ignore[attr-defined]
            {"method": self.command, "path": self.path, "headers": dict(self.headers),
             "body": body})
        status, text = 200, json.dumps({"path": self.path, "body": body})
        if self.path.startswith("/big"):
            text = "y" * 50_000
        elif self.path.startswith("/missing"):
            status, text = 404, '{"error": "no such vendor"}'
        elif self.path.startswith("/echo-auth"):
            text = f"you sent {self.headers.get('authorization')}"
        elif self.path.startswith("/never"):
            self.server.released.wait()  # type: ignore[attr-defined]  # no answer in the test
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client stopped
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def erp() -> Iterator[ThreadingHTTPServer]:
    """A small ERP API on 127.0.0.1 that records every request."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    server.released = threading.Event()  # type: ignore[attr-defined]
    # answer shutdown() within 10 ms, not serve_forever's default 0.5 s poll
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.released.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


async def _run(tmp_path: Path, target: dict[str, Any], arguments: dict[str, Any],
               timeout_s: float = 5.0) -> tuple[str, bool, bool]:
    box = await Toolbox.open([tool_spec(tmp_path, "erp", "http", target, timeout_s=timeout_s)])
    try:
        result = await box.run(call("erp", arguments))
    finally:
        await box.aclose()
    return result.content, result.is_error, result.truncated


async def test_url_is_templated_and_a_header_comes_from_the_environment(
    erp: ThreadingHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /vendors/<id> with the token from ERP_TOKEN; the token never reaches the result."""
    monkeypatch.setenv("ERP_TOKEN", SECRET)
    target = {
        "method": "GET",
        "url": _url(erp, "/vendors/{{ args.vendor_id | urlencode }}"),
        "headers": {"Authorization": {"env": "ERP_TOKEN", "prefix": "Bearer "},
                    "X-Request-For": "{{ args.vendor_id }}"},
    }
    content, failed, _ = await _run(tmp_path, target, {"vendor_id": "V 10042"})
    assert not failed, content
    seen = erp.seen[-1]  # type: ignore[attr-defined]
    assert seen["path"] == "/vendors/V%2010042"
    assert seen["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert seen["headers"]["X-Request-For"] == "V 10042"
    assert SECRET not in content


async def test_post_sends_the_arguments_as_json_or_the_templated_body(
    erp: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """Without body: the arguments as JSON; with body: its strings rendered over args."""
    args = {"po_number": "PO-778812", "line": 3}
    content, _, _ = await _run(tmp_path, {"url": _url(erp, "/po")}, args)
    assert json.loads(json.loads(content)["body"]) == args
    target = {"method": "PUT", "url": _url(erp, "/po"),
              "body": {"po": "{{ args.po_number }}", "note": "line {{ args.line }}"}}
    content, _, _ = await _run(tmp_path, target, args)
    assert json.loads(json.loads(content)["body"]) == {"po": "PO-778812", "note": "line 3"}


async def test_a_long_response_is_cut_to_max_bytes_and_says_so(
    erp: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """The body is truncated at max_bytes, and the result tells the model the limit."""
    content, failed, truncated = await _run(
        tmp_path, {"method": "GET", "url": _url(erp, "/big"), "max_bytes": 1000}, {})
    assert not failed
    assert truncated
    assert content == "y" * 1000 + "\n[truncated to 1000 bytes]"


async def test_an_error_status_is_an_error_result_with_the_body(
    erp: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """HTTP 404 goes back to the model as an error that says what the server said."""
    content, failed, _ = await _run(tmp_path, {"method": "GET", "url": _url(erp, "/missing")}, {})
    assert failed
    assert "HTTP 404" in content
    assert "no such vendor" in content


async def test_a_secret_is_never_echoed_and_a_missing_one_is_named(
    erp: ThreadingHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that echoes the token has it masked; an unset variable is named, not guessed."""
    target = {"method": "GET", "url": _url(erp, "/echo-auth"),
              "headers": {"Authorization": {"env": "ERP_TOKEN"}}}
    content, failed, _ = await _run(tmp_path, target, {})
    assert failed
    assert "ERP_TOKEN" in content
    assert "is not set" in content
    monkeypatch.setenv("ERP_TOKEN", SECRET)
    content, failed, _ = await _run(tmp_path, target, {})
    assert not failed
    assert content == "you sent [secret]"


async def test_a_slow_server_is_a_timeout_error_result(
    erp: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """The http block's timeout_s bounds the request: a server that never answers is an
    error result naming it (the tool's own, longer timeout_s is not what ends the call)."""
    target = {"method": "GET", "url": _url(erp, "/never"), "timeout_s": 0.2}
    content, failed, _ = await _run(tmp_path, target, {})
    assert failed
    assert "no answer within timeout_s=0.2" in content
