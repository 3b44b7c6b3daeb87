"""``http:`` tools against a real HTTP server on 127.0.0.1: templates, env headers, limits."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

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


# --- hostile tool calls: two loopback servers, the ERP (A) and another one (B) -----------

ERP_IDS = {"V-1": '{"vendor": "V-1", "name": "ACME"}'}


class _Origin(BaseHTTPRequestHandler):
    """The ERP on port A: vendors, a secret outside the tool's path, redirects, and bodies
    that never end, are compressed bombs or trickle in. Unknown vendors are 404."""

    def do_GET(self) -> None:
        server: Any = self.server
        server.seen.append({"path": self.path, "headers": dict(self.headers)})
        path = self.path
        if path == "/admin/secret":
            self._send(200, b"TOP SECRET")
        elif path == "/api/vendors/moved":
            self._redirect("/api/vendors/V-1")
        elif path == "/api/vendors/away":
            self._redirect(f"http://127.0.0.1:{server.other_port}/steal")
        elif path == "/api/vendors/huge":
            self._endless(b"y" * 65536)
        elif path == "/api/vendors/bomb":
            packed = gzip.compress(b"\0" * 50_000_000)
            self.send_response(200)
            self.send_header("content-encoding", "gzip")
            self.send_header("content-length", str(len(packed)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(packed)
        elif path == "/api/vendors/trickle":
            self.send_response(200)
            self.send_header("content-length", "1000000")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while not server.released.wait(0.02):
                    self.wfile.write(b"z")
                    self.wfile.flush()
        else:
            name = path.rsplit("/", 1)[-1].removeprefix("vendors?name=")
            body = ERP_IDS.get(name) or ERP_IDS.get(unquote(name))
            if body is not None and "%" not in name:
                self._send(200, body.encode())
            else:
                self._send(404, b'{"error": "no such vendor"}')

    def _send(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("location", location)
        self.send_header("content-length", "0")
        self.end_headers()

    def _endless(self, chunk: bytes) -> None:
        """A body with no length that never ends (until the client hangs up)."""
        self.send_response(200)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while not self.server.released.is_set():  # type: ignore[attr-defined]
                self.wfile.write(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    server.released = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    return server


@pytest.fixture
def two() -> Iterator[tuple[ThreadingHTTPServer, ThreadingHTTPServer]]:
    """The ERP (A) and another server (B) on two loopback ports, both recording requests."""
    other = _serve(_Origin)
    origin = _serve(_Origin)
    origin.other_port = other.server_address[1]  # type: ignore[attr-defined]
    other.other_port = other.server_address[1]  # type: ignore[attr-defined]
    yield origin, other
    for server in (origin, other):
        server.released.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def _port(server: ThreadingHTTPServer) -> int:
    return int(server.server_address[1])


def _vendor_tool(origin: ThreadingHTTPServer, **extra: Any) -> dict[str, Any]:
    return {
        "method": "GET",
        "url": f"http://127.0.0.1:{_port(origin)}/api/vendors/{{{{ args.id }}}}",
        "headers": {"Authorization": {"env": "ERP_TOKEN", "prefix": "Bearer "}},
        **extra,
    }


def _no_leak(*servers: ThreadingHTTPServer) -> None:
    """B got nothing, and the credential went nowhere but the ERP's vendor path."""
    origin, *others = servers
    for server in others:
        assert server.seen == [], server.seen  # type: ignore[attr-defined]
    for request in origin.seen:  # type: ignore[attr-defined]
        assert request["path"].startswith("/api/vendors"), request["path"]


@pytest.mark.parametrize(
    "value",
    [
        "../../admin/secret",
        "..",
        ".",
        "%2e%2e/%2e%2e/admin/secret",
        "%2e%2e",
        "..%2f..%2fadmin%2fsecret",
        "%252e%252e%252fadmin",
        "..\\..\\admin\\secret",
        "V-1/../../admin/secret",
    ],
)
async def test_an_argument_cannot_climb_out_of_the_tools_path(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    """A path segment of ., .. or its encodings (%2e%2e, ..%2f, ..\\) is refused before
    anything is sent: an error result the model reads, and no request at all."""
    monkeypatch.setenv("ERP_TOKEN", SECRET)
    origin, other = two
    content, failed, _ = await _run(tmp_path, _vendor_tool(origin), {"id": value})
    assert failed
    assert "refused" in content, content
    assert "climb out" in content, content
    assert origin.seen == []  # type: ignore[attr-defined]
    _no_leak(origin, other)


@pytest.mark.parametrize(
    "value",
    [
        "@127.0.0.1:{other}/steal",
        "V-1@127.0.0.1:{other}",
        "http://127.0.0.1:{other}/steal",
        "V-1?x=1#frag",
        "V-1/x",
        "V-1%2fx",
        "[::1]:{other}",
        "[::ffff:127.0.0.1]:{other}",
        "\\\\127.0.0.1:{other}\\steal",
        "V-1\r\nHost: 127.0.0.1:{other}",
    ],
)
async def test_an_argument_fills_one_path_segment_and_goes_nowhere_else(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    """Hosts, ports, userinfo (@), slashes, backslashes, ?, #, IPv6 literals and line
    breaks in an argument are encoded into one segment under /api/vendors/: the ERP
    answers 404 (an error result), the other port hears nothing, the token stays home."""
    monkeypatch.setenv("ERP_TOKEN", SECRET)
    origin, other = two
    value = value.format(other=_port(other))
    content, failed, _ = await _run(tmp_path, _vendor_tool(origin), {"id": value})
    assert failed
    assert "HTTP 404" in content, content
    [request] = origin.seen  # type: ignore[attr-defined]
    prefix, _, segment = request["path"].rpartition("/")
    assert prefix == "/api/vendors"
    assert unquote(segment) == value
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    _no_leak(origin, other)


async def test_an_argument_fills_one_query_value(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer], tmp_path: Path
) -> None:
    """&, =, # and a URL in a query argument stay inside that one value."""
    origin, other = two
    target = {"method": "GET",
              "url": f"http://127.0.0.1:{_port(origin)}/api/vendors?name={{{{ args.q }}}}"}
    for value in ("ACME&admin=1", f"x#@127.0.0.1:{_port(other)}/steal", "V-1"):
        content, failed, _ = await _run(tmp_path, target, {"q": value})
        path = origin.seen[-1]["path"]  # type: ignore[attr-defined]
        assert path == "/api/vendors?name=" + quote(value, safe="")
        assert failed == (value != "V-1"), content
    _no_leak(origin, other)


async def test_a_url_that_lets_arguments_reach_the_host_is_not_run(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer], tmp_path: Path
) -> None:
    """A template with no / after the port (the 'http://host:port{{ path }}' trap) is
    refused at every call unless it lists allowed_hosts; nothing is sent."""
    origin, other = two
    target = {"method": "GET", "url": f"http://127.0.0.1:{_port(origin)}{{{{ args.path }}}}"}
    content, failed, _ = await _run(tmp_path, target, {"path": f"@127.0.0.1:{_port(other)}/x"})
    assert failed
    assert "needs allowed_hosts" in content
    assert origin.seen == []  # type: ignore[attr-defined]
    assert other.seen == []  # type: ignore[attr-defined]


def _listed(origin: ThreadingHTTPServer, hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "method": "GET",
        "url": "http://{{ args.host }}:{{ args.port }}/api/vendors/{{ args.id }}",
        "allowed_hosts": hosts,
        **extra,
    }


async def test_allowed_hosts_admit_only_the_hosts_and_ports_listed(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer], tmp_path: Path
) -> None:
    """A host from the arguments must be on the list with its port: the listed one is
    called; another port, localhost, IPv6 and decimal forms of the same address, the
    cloud metadata address, and userinfo or port tricks are refused before sending."""
    origin, other = two
    a, b = _port(origin), _port(other)
    target = _listed(origin, [f"127.0.0.1:{a}"])
    content, failed, _ = await _run(tmp_path, target, {"host": "127.0.0.1", "port": a, "id": "V-1"})
    assert not failed, content
    hostile = [
        ("127.0.0.1", b), ("localhost", a), ("[::1]", a), ("::1", a), ("::ffff:127.0.0.1", a),
        ("2130706433", a), ("0x7f000001", a), ("169.254.169.254", 80), ("127.0.0.1.", b),
        (f"127.0.0.1:{b}", a), (f"x@127.0.0.1:{b}", a), (f"127.0.0.1:{a}/../admin", a),
    ]  # fmt: skip
    for host, port in hostile:
        content, failed, _ = await _run(tmp_path, target, {"host": host, "port": port, "id": "V-1"})
        assert failed, (host, port)
        assert "refused" in content, content
    assert len(origin.seen) == 1  # type: ignore[attr-defined]
    _no_leak(origin, other)


async def test_a_listed_name_must_resolve_to_addresses_the_list_allows(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer], tmp_path: Path
) -> None:
    """localhost is listed but resolves to loopback: refused until its addresses are
    listed too; then the request goes to a checked address with Host: localhost:A."""
    origin, other = two
    a = _port(origin)
    args = {"host": "localhost", "port": a, "id": "V-1"}
    content, failed, _ = await _run(tmp_path, _listed(origin, [f"localhost:{a}"]), args)
    assert failed
    assert "a loopback address, which allowed_hosts does not list" in content
    assert origin.seen == []  # type: ignore[attr-defined]
    hosts = [f"localhost:{a}", f"127.0.0.0/8:{a}", f"[::1]:{a}"]
    content, failed, _ = await _run(tmp_path, _listed(origin, hosts), args)
    assert not failed, content
    assert origin.seen[-1]["headers"]["Host"] == f"localhost:{a}"  # type: ignore[attr-defined]
    _no_leak(origin, other)


async def test_credentials_never_follow_a_host_from_the_arguments(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tool whose host comes from the arguments cannot send an env: header: error
    result, nothing sent, even to a listed host."""
    monkeypatch.setenv("ERP_TOKEN", SECRET)
    origin, other = two
    a = _port(origin)
    target = _listed(origin, [f"127.0.0.1:{a}"],
                     headers={"Authorization": {"env": "ERP_TOKEN"}})  # fmt: skip
    content, failed, _ = await _run(tmp_path, target, {"host": "127.0.0.1", "port": a, "id": "V-1"})
    assert failed
    assert "env: credentials go only to a fixed origin" in content
    assert SECRET not in content
    assert origin.seen == []  # type: ignore[attr-defined]
    assert other.seen == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("follow", [False, True])
async def test_a_redirect_to_another_origin_is_an_error_and_the_token_stays(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    follow: bool,
) -> None:
    """A 302 to the other port is an error result naming it, with or without
    follow_redirects; the other server is never called, so the token never reaches it."""
    monkeypatch.setenv("ERP_TOKEN", SECRET)
    origin, other = two
    content, failed, _ = await _run(
        tmp_path, _vendor_tool(origin, follow_redirects=follow), {"id": "away"}
    )
    assert failed
    assert f"127.0.0.1:{_port(other)}" in content
    assert ("another origin" if follow else "does not follow redirects") in content
    _no_leak(origin, other)


async def test_a_same_origin_redirect_is_followed_only_when_the_tool_says_so(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without follow_redirects a 302 is an error result (never an empty 'ok'); with it,
    a redirect within the origin is followed, the token going along."""
    monkeypatch.setenv("ERP_TOKEN", SECRET)
    origin, other = two
    content, failed, _ = await _run(tmp_path, _vendor_tool(origin), {"id": "moved"})
    assert failed
    assert "redirected to" in content
    assert "/api/vendors/V-1" in content
    content, failed, _ = await _run(
        tmp_path, _vendor_tool(origin, follow_redirects=True), {"id": "moved"}
    )
    assert not failed
    assert json.loads(content) == {"vendor": "V-1", "name": "ACME"}
    hops = origin.seen[-2:]  # type: ignore[attr-defined]
    assert [h["path"] for h in hops] == ["/api/vendors/moved", "/api/vendors/V-1"]
    assert all(h["headers"]["Authorization"] == f"Bearer {SECRET}" for h in hops)
    _no_leak(origin, other)


@pytest.mark.parametrize("what", ["huge", "bomb"])
async def test_a_huge_or_compressed_body_is_read_only_to_max_bytes(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer], tmp_path: Path, what: str
) -> None:
    """A body that never ends, or 50 MB as a gzip bomb, is cut at max_bytes at once: the
    result says so."""
    origin, _ = two
    started = time.perf_counter()
    content, failed, truncated = await _run(
        tmp_path, _vendor_tool(origin, max_bytes=1000, headers={}), {"id": what}
    )
    assert time.perf_counter() - started < 2.0
    assert not failed
    assert truncated
    assert content.endswith("\n[truncated to 1000 bytes]")
    assert len(content) < 1100


async def test_a_trickling_body_is_cut_off_at_timeout_s(
    two: tuple[ThreadingHTTPServer, ThreadingHTTPServer], tmp_path: Path
) -> None:
    """A server that sends a byte every 20 ms forever is an error result at the http
    block's timeout_s, which bounds the whole exchange, not each read."""
    origin, _ = two
    started = time.perf_counter()
    content, failed, _ = await _run(
        tmp_path, _vendor_tool(origin, timeout_s=0.3, headers={}), {"id": "trickle"}
    )
    assert time.perf_counter() - started < 1.5
    assert failed
    assert "no answer within timeout_s=0.3" in content
