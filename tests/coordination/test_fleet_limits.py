"""Four real aoe processes share one provider key at its exact limits, through Redis.

The loopback server enforces requests per minute and tokens per minute (counted as it
bills them); every process is configured with exactly those limits and the same
``coordination.redis_url``. Done when (issue 13): no 429 from either limit, and at least
95 % of the limit used. ``run_fleet`` is the driver; ``bench/bench_fleet.py`` runs it for
3 minutes (the sliding minute turning over three times), this test for the first minute
only (a per-minute limit cannot turn over in a test short enough for the suite).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakeprovider import FakeProvider, fake_provider

__all__ = ["FleetResult", "fake_provider", "run_fleet", "window_use"]

PROCESSES = 4


@dataclass(frozen=True)
class FleetResult:
    """What the server saw of one fleet run."""

    seconds: float  # from the first call the server checked to the fleet's stop
    calls: int  # calls the server accepted
    tokens: int  # tokens it billed for them
    refused: dict[str, int]  # its 429s, by limit
    requests_use: float  # of the requests-per-minute limit (see ``window_use``)
    tokens_use: float  # of the tokens-per-minute limit
    exit_codes: tuple[int, ...]
    stderr: tuple[str, ...]  # the end of each process's


def window_use(
    events: Sequence[tuple[float, float]], limit: int, start: float, end: float
) -> float:
    """How much of a per-minute ``limit`` the ``(time, amount)`` events used.

    A run shorter than a minute: the last sliding minute's sum over the limit (the fleet
    filled its first minute). Longer: the sliding minute's sum averaged over every tenth
    of a second after the first minute, over the limit (the time the limit stood unused,
    waiting for the window to turn, counts against it).
    """
    if end - start <= 60.0:
        return sum(a for t, a in events if t <= end) / limit
    steps = int((end - start - 60.0) * 10)
    total = 0.0
    for step in range(steps + 1):
        now = start + 60.0 + step / 10
        total += sum(a for t, a in events if now - 60.0 < t <= now)
    return total / (steps + 1) / limit


def _write(folder: Path, base_url: str, redis_url: str, agents: int, rpm: int, tpm: int) -> Path:
    """aoe.yaml at the server's exact limits, sharing them through ``redis_url``; a
    workflow of ``agents`` independent agents."""
    (folder / "aoe.yaml").write_text(
        "providers:\n"
        f"  gw: {{type: openai, api_key_env: OPENAI_API_KEY, base_url: '{base_url}',"
        f" limits: {{requests_per_minute: {rpm}, tokens_per_minute: {tpm}}}}}\n"
        "pricing:\n  gw/gpt-4o-mini: {input_per_mtok: 0.15, output_per_mtok: 0.6}\n"
        f"coordination: {{redis_url: '{redis_url}'}}\n"
    )
    body = "".join(
        f"  a{i:04d}:\n    model: gw/gpt-4o-mini\n    prompt: 'Check invoice {i}'\n"
        for i in range(agents)
    )
    path = folder / "wf.yaml"
    path.write_text(
        "version: 1\nname: fleet\nallow_partial_completion: true\nmax_failure_rate: 1\n"
        "defaults:\n  max_tokens: 60\n  timeout_s: 30\n"
        "  retry: {max_retries: 3, strategy: constant, base_delay_s: 0.5, jitter: false}\n"
        "agents:\n" + body
    )
    return path


def run_fleet(
    server: FakeProvider,
    folder: Path,
    redis_url: str,
    *,
    rpm: int,
    tpm: int,
    agents: int,
    seconds: float | None,
    quiet_s: float = 4.0,
    deadline_s: float = 60.0,
    shared: bool = True,
) -> FleetResult:
    """Run ``PROCESSES`` ``aoe run`` processes of ``agents`` agents each against ``server``
    enforcing ``rpm`` and ``tpm``, all configured with exactly those limits; stop them
    (SIGTERM, as Ctrl-C) ``seconds`` after the first call, or, with ``seconds=None``, once
    no call was accepted for ``quiet_s`` (the fleet used what the minute allows and waits
    for it to turn), or at ``deadline_s``. ``shared=False`` gives each process a Redis
    database of its own: four separate limiters, the baseline."""
    server.latency_s = 0.02
    server.enforce(requests_per_minute=rpm, tokens_per_minute=tpm, headers=True, say_which=True)
    procs = []
    for index in range(PROCESSES):
        home = folder / f"p{index}"
        home.mkdir()
        url = redis_url if shared else f"{redis_url.rsplit('/', 1)[0]}/{index + 1}"
        wf = _write(home, server.openai_base_url, url, agents, rpm, tpm)
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-test-fleet-limits",
            "AOE_DB": str(home / "aoe.db"),
            "CI": "true",
        }
        env.pop("AOE_REDIS_URL", None)  # aoe.yaml's coordination.redis_url, as a user has it
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "aoe", "run", str(wf), "--json", "--no-live"],
                env=env,
                cwd=home,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    try:
        began = time.monotonic()
        while not server.limit_log:
            if time.monotonic() - began > deadline_s or any(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
        first = server.limit_log[0][0] if server.limit_log else time.monotonic()
        seen, seen_at = 0, time.monotonic()
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if seconds is not None and now - first >= seconds:
                break
            if now - began > deadline_s + (seconds or 0):
                break
            accepted = len(server.limit_log) - server.limit_429s
            if accepted != seen:
                seen, seen_at = accepted, now
            elif seconds is None and accepted and now - seen_at >= quiet_s:
                break
            time.sleep(0.05)
        stopped = time.monotonic()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes, errors = [], []
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            codes.append(proc.returncode)
            errors.append(err.decode()[-2000:])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    calls = [(at, 1.0) for at, refused in server.limit_log if not refused]
    tokens = [(at, amount) for at, amount in server.token_log]
    return FleetResult(
        seconds=stopped - first,
        calls=len(calls),
        tokens=int(sum(a for _, a in tokens)),
        refused=dict(server.refused),
        requests_use=window_use(calls, rpm, first, stopped),
        tokens_use=window_use(tokens, tpm, first, stopped),
        exit_codes=tuple(codes),
        stderr=tuple(errors),
    )


# Tokens one call of ``_write``'s workflow is billed by the server: about 12 of input
# (json/4 of its messages) and 22 of output.
TOKENS_PER_CALL = 34


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("binding", "rpm", "tpm"),
    [
        ("requests", 240, 240 * TOKENS_PER_CALL * 4),  # the token limit 4x what 240 calls use
        ("tokens", 2400, 200 * TOKENS_PER_CALL),  # about 200 calls' worth of tokens
    ],
)
def test_four_processes_at_a_keys_exact_limits_use_them_without_a_429(
    fake_provider: FakeProvider, tmp_path: Path, redis_url: str, binding: str, rpm: int, tpm: int
) -> None:
    """4 ``aoe run`` processes, each configured at the key's exact requests and tokens per
    minute, with far more work than a minute allows: the server refuses none of their calls
    and they use at least 95 % of the binding limit before waiting for the minute to turn.

    Why 95 % is a floor that can fail: the fleet stops at the limit only by its own shared
    windows. Requests: it should send exactly ``rpm`` (100 %); one lost grant per process
    would already be 98 %. Tokens: a call is admitted on its estimate (input + max_tokens,
    about 75) and settled to what the server billed (about 34), so the last grant of the
    minute falls short by under one estimate: 75 / 6800 < 2 %.
    """
    agents = math.ceil(1.5 * (rpm if binding == "requests" else tpm / TOKENS_PER_CALL) / PROCESSES)
    result = run_fleet(
        fake_provider, tmp_path, redis_url, rpm=rpm, tpm=tpm, agents=agents, seconds=None,
        deadline_s=50.0,
    )  # fmt: skip
    use = result.requests_use if binding == "requests" else result.tokens_use
    print(
        f"\n{binding}-bound: {result.calls} calls, {result.tokens} tokens in "
        f"{result.seconds:.1f} s; requests {result.requests_use:.1%} of {rpm}/min, tokens "
        f"{result.tokens_use:.1%} of {tpm}/min; 429s {result.refused}"
    )
    assert set(result.exit_codes) <= {0, 130}, result.stderr  # ended by SIGTERM or done
    assert result.refused.get("requests", 0) == 0
    assert result.refused.get("tokens", 0) == 0
    assert result.requests_use <= 1.0  # the server's own count
    assert result.tokens_use <= 1.0
    assert use >= 0.95
