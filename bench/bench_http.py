"""Calls per second and CPU per call of HTTP clients against the loopback provider server.

    python bench/bench_http.py                  # every candidate, 3 rounds (about 3 minutes)
    python bench/bench_http.py --rounds 5
    python bench/bench_http.py --json --quick   # aoe's clients and the baseline (under 60 s)

The loopback server (tests/fakeprovider.py, OpenAI and Anthropic wire formats, latency 0)
runs in its own process (``--serve``), so its CPU does not share the client's GIL. Each
measurement keeps a fixed number of calls in flight (1, 10, 100, 500) for a fixed time,
after a warm-up that opens the connections, and counts the calls completed and the CPU
time of this process in that window. Variants alternate round by round, the order
rotated each round; each figure is the fastest of the rounds.

Candidates, each sending the same request body and headers aoe sends:

- ``aiohttp minimal`` (the baseline): one ``ClientSession`` with an unbounded pool, post,
  read, ``json.loads``.
- ``aiohttp as aoe`` : the session aoe opens (``aoe.providers.http.make_session``).
- ``httpx default`` and ``httpx pool=N``: ``httpx.AsyncClient`` with its default pool
  (100 connections, 20 kept alive) and with a pool sized to the calls in flight.
- ``httpx+httpx-aiohttp``: httpx over the ``httpx-aiohttp`` transport.
- ``aoe openai`` / ``aoe anthropic``: ``OpenAIClient.complete`` / ``AnthropicClient.complete``
  as shipped (aiohttp, pool sized to ``concurrent_requests`` = the calls in flight):
  request body built, answer parsed into a ``Completion`` with usage and rate-limit headers.
- ``aoe openai on httpx`` (as before this change: one client of 512 connections, 64 kept
  alive), ``on httpx pool=N`` and ``on httpx-aiohttp``: the same client with its one HTTP
  exchange (``JsonApiClient._post``) done by that transport, as ``post_json`` did with httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from aoe.providers.anthropic import AnthropicClient
from aoe.providers.base import CompletionRequest, Message
from aoe.providers.http import JsonResponse, make_session
from aoe.providers.openai import OpenAIClient
from aoe.spec.models import LimitsSpec, ProviderConfig
from tests.fakeprovider import FakeProvider

LEVELS = (1, 10, 100, 500)
KEY = "sk-bench-0000"
TIMEOUT_S = 60.0
#: Issue 12's goals, one per row so ``run_all.py`` can judge them.
GOAL_SHARE = ">= 50 % of the minimal aiohttp client"


def goal_calls(in_flight: int) -> str:
    return ">= 2,000 calls/s" if in_flight >= 100 else ">= 1,500 calls/s"
GOAL_CPU = "<= 0.4 ms CPU per call (issue 12, through `aoe run`)"

Call = Callable[[], Awaitable[Any]]
Factory = Callable[[int], contextlib.AbstractAsyncContextManager[Call]]


# --- the server process -----------------------------------------------------------------


def serve() -> None:
    """Run the loopback server until stdin closes; print its port first."""
    server = FakeProvider()
    server.start()
    assert server._loop is not None
    loop = server._loop

    def forget() -> None:  # what it records for tests would grow without bound here
        server.requests.clear()
        server.responses.clear()
        server.billed.clear()
        loop.call_later(1.0, forget)

    loop.call_soon_threadsafe(forget)
    print(server.port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.read()  # until the benchmark closes it
    server.stop()


@contextlib.contextmanager
def server_process() -> Iterator[int]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield int(child.stdout.readline())
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


# --- the candidates ---------------------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """What every candidate sends: the body and headers aoe's OpenAI client sends."""

    base_url: str

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    @property
    def body(self) -> dict[str, Any]:
        return {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_completion_tokens": 64,
        }

    @property
    def data(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()

    @property
    def headers(self) -> dict[str, str]:
        return {"content-type": "application/json", "authorization": f"Bearer {KEY}"}


def aiohttp_minimal(wire: Wire) -> Factory:
    @contextlib.asynccontextmanager
    async def make(_: int) -> AsyncIterator[Call]:
        url, data, headers = wire.url, wire.data, wire.headers
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def call() -> Any:
                async with session.post(url, data=data, headers=headers) as response:
                    return json.loads(await response.read())

            yield call

    return make


def aiohttp_as_aoe(wire: Wire) -> Factory:
    @contextlib.asynccontextmanager
    async def make(in_flight: int) -> AsyncIterator[Call]:
        url, data, headers = wire.url, wire.data, wire.headers
        async with make_session(max_connections=in_flight) as session:

            async def call() -> Any:
                async with session.post(url, data=data, headers=headers) as response:
                    return json.loads(await response.read())

            yield call

    return make


def httpx_client(in_flight: int, pool: str) -> Any:
    if pool == "default":
        return httpx.AsyncClient(timeout=None)
    if pool == "sized":
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        return httpx.AsyncClient(timeout=None, limits=limits)
    if pool == "before":  # aoe's make_http_client before this change
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
        return httpx.AsyncClient(timeout=None, limits=limits, follow_redirects=False)
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=in_flight))
    return httpx.AsyncClient(timeout=None, transport=transport)


def httpx_raw(wire: Wire, pool: str) -> Factory:
    @contextlib.asynccontextmanager
    async def make(in_flight: int) -> AsyncIterator[Call]:
        url, data, headers = wire.url, wire.data, wire.headers
        async with httpx_client(in_flight, pool) as client:

            async def call() -> Any:
                response = await client.post(url, content=data, headers=headers)
                return json.loads(response.content)

            yield call

    return make


def request(model: str) -> Any:
    return CompletionRequest(
        model=model, messages=(Message("user", "Say hello."),), max_tokens=64, timeout_s=TIMEOUT_S
    )


def aoe_client(wire: Wire, kind: str) -> Factory:
    @contextlib.asynccontextmanager
    async def make(in_flight: int) -> AsyncIterator[Call]:
        limits = LimitsSpec(concurrent_requests=in_flight)
        if kind == "anthropic":
            config = ProviderConfig("anthropic", "anthropic", None, wire.base_url, limits=limits)
            client: Any = AnthropicClient(config, api_key=KEY)
            ask = request("claude-haiku-4-5")
        else:
            config = ProviderConfig("openai", "openai", None, f"{wire.base_url}/v1", limits=limits)
            client = OpenAIClient(config, api_key=KEY)
            ask = request("gpt-4o-mini")
        try:
            yield lambda: client.complete(ask)
        finally:
            await client.aclose()

    return make


def aoe_on_httpx(wire: Wire, pool: str) -> Factory:
    """aoe's OpenAI client with its HTTP exchange done by httpx, as ``post_json`` did it."""

    class OnHttpx(OpenAIClient):
        http: httpx.AsyncClient

        async def _post(self, body: dict[str, Any], *, timeout_s: float) -> JsonResponse:
            connect_s = min(timeout_s / 2, 10.0)
            timeout = httpx.Timeout(None, connect=connect_s, pool=connect_s)
            started = time.perf_counter()
            async with asyncio.timeout(timeout_s):
                response = await self.http.post(
                    self._url, headers=dict(self._headers), json=body, timeout=timeout
                )
            parsed = json.loads(response.content)
            latency_s = time.perf_counter() - started
            return JsonResponse(
                response.status_code, response.headers, parsed, response.content, latency_s
            )

    @contextlib.asynccontextmanager
    async def make(in_flight: int) -> AsyncIterator[Call]:
        config = ProviderConfig("openai", "openai", None, f"{wire.base_url}/v1")
        client = OnHttpx(config, api_key=KEY)
        ask = request("gpt-4o-mini")
        async with httpx_client(in_flight, pool) as http:
            client.http = http
            yield lambda: client.complete(ask)

    return make


BASELINE = "aiohttp minimal"


def candidates(wire: Wire, quick: bool) -> dict[str, Factory]:
    shipped = {
        BASELINE: aiohttp_minimal(wire),
        "aoe openai": aoe_client(wire, "openai"),
        "aoe anthropic": aoe_client(wire, "anthropic"),
    }
    if quick:
        return shipped
    return {
        **shipped,
        "aiohttp as aoe": aiohttp_as_aoe(wire),
        "httpx default": httpx_raw(wire, "default"),
        "httpx pool=N": httpx_raw(wire, "sized"),
        "httpx+httpx-aiohttp": httpx_raw(wire, "httpx-aiohttp"),
        "aoe openai on httpx (before)": aoe_on_httpx(wire, "before"),
        "aoe openai on httpx pool=N": aoe_on_httpx(wire, "sized"),
        "aoe openai on httpx-aiohttp": aoe_on_httpx(wire, "httpx-aiohttp"),
    }


# --- the driver -------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    calls_per_s: float
    cpu_ms_per_call: float


async def measure(make: Factory, in_flight: int, warm_s: float, window_s: float) -> Result:
    """Keep ``in_flight`` calls going; count those completed in a window after the warm-up."""
    done = 0

    async with make(in_flight) as call:

        async def worker() -> None:
            nonlocal done
            while True:
                await call()
                done += 1

        workers = [asyncio.create_task(worker()) for _ in range(in_flight)]
        try:
            await asyncio.sleep(warm_s)
            first, wall, cpu = done, time.perf_counter(), time.process_time()
            await asyncio.sleep(window_s)
            count = done - first
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            for task in workers:
                if task.done():
                    task.result()  # a failing candidate is a broken benchmark, not a figure
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return Result(count / wall, cpu / max(count, 1) * 1e3)


def run(quick: bool, rounds: int) -> dict[tuple[str, int], Result]:
    warm_s, window_s = (0.25, 0.5) if quick else (0.4, 1.0)
    best: dict[tuple[str, int], Result] = {}
    with server_process() as port:
        variants = candidates(Wire(f"http://127.0.0.1:{port}"), quick)
        names = list(variants)
        for number in range(rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            for in_flight in LEVELS:
                for name in order:
                    result = asyncio.run(measure(variants[name], in_flight, warm_s, window_s))
                    key = (name, in_flight)
                    old = best.get(key)
                    best[key] = Result(
                        max(result.calls_per_s, old.calls_per_s if old else 0.0),
                        min(result.cpu_ms_per_call, old.cpu_ms_per_call if old else 1e9),
                    )
    return best


def table(best: dict[tuple[str, int], Result]) -> str:
    names = list(dict.fromkeys(name for name, _ in best))
    width = max(len(n) for n in names)
    head = " ".join(f"{f'{k} in flight':>20}" for k in LEVELS)
    lines = [f"{'calls/s (CPU ms per call)':<{width}} {head}", "-" * (width + 21 * len(LEVELS))]
    for name in names:
        cells = []
        for k in LEVELS:
            r, base = best[(name, k)], best[(BASELINE, k)]
            ratio = r.calls_per_s / base.calls_per_s * 100
            cells.append(f"{r.calls_per_s:>6,.0f} {ratio:>3.0f}% ({r.cpu_ms_per_call:.3f})")
        lines.append(f"{name:<{width}} " + " ".join(f"{c:>20}" for c in cells))
    lines.append(f"% = calls/s against '{BASELINE}' in the same run; fastest of the rounds")
    return "\n".join(lines)


def rows(best: dict[tuple[str, int], Result]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in ("aoe openai", "aoe anthropic"):
        for k in LEVELS:
            r, base = best[(name, k)], best[(BASELINE, k)]
            out.append(
                {
                    "what": f"{name} client calls/s, {k} in flight (loopback, latency 0)",
                    "value": round(r.calls_per_s, 1),
                    "unit": "calls/s",
                    "baseline": f"{BASELINE} client, same run",
                    "baseline_value": round(base.calls_per_s, 1),
                    "goal": goal_calls(k),
                }
            )
            out.append(
                {
                    "what": f"{name} client calls/s, {k} in flight, share of {BASELINE}",
                    "value": round(r.calls_per_s / base.calls_per_s * 100, 1),
                    "unit": "%",
                    "baseline": None,
                    "baseline_value": None,
                    "goal": ">= 50 %",
                }
            )
            out.append(
                {
                    "what": f"{name} client CPU per call, {k} in flight",
                    "value": round(r.cpu_ms_per_call, 4),
                    "unit": "ms",
                    "baseline": f"{BASELINE} client, same run",
                    "baseline_value": round(base.cpu_ms_per_call, 4),
                    "goal": GOAL_CPU,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line of rows")
    parser.add_argument("--quick", action="store_true", help="aoe and the baseline only")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    rounds = args.rounds or 3
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    best = run(args.quick, rounds)
    print(table(best))
    if args.json:
        print(json.dumps(rows(best)))


if __name__ == "__main__":
    main()
