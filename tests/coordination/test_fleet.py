"""Real aoe processes sharing one provider key through Redis, against the loopback server
that enforces the key's limits as a provider would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakeprovider import FakeProvider, fake_provider
from tests.integration.test_learned_limits import _write

__all__ = ["fake_provider"]


def _start(
    folder: Path, wf: Path, redis_url: str, key: str = "sk-test-fleet"
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "OPENAI_API_KEY": key,
        "AOE_DB": str(folder / "aoe.db"),
        "AOE_REDIS_URL": redis_url,
        "CI": "true",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "aoe", "run", str(wf), "--json", "--no-live"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_two_processes_at_a_keys_exact_limits_see_no_429(
    fake_provider: FakeProvider, tmp_path: Path, redis_url: str
) -> None:
    """Two aoe processes, each configured at the key's exact limits (4 at once), share them
    through Redis: together they never send a fifth call at once, so the server refuses
    none of 2 x 150 calls (each process on its own limiter drew dozens of 429s)."""
    fake_provider.latency_s = 0.03
    fake_provider.enforce(
        requests_per_minute=3000, concurrent=4, headers=True, say_which=True, retry_after=None
    )
    procs = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        wf = _write(
            folder,
            fake_provider.openai_base_url,
            150,
            limits="requests_per_minute: 3000, concurrent_requests: 4",
            retry="{max_retries: 8, strategy: constant, base_delay_s: 0.05, jitter: false}",
        )
        procs.append(_start(folder, wf, redis_url))
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=50)
        assert proc.returncode == 0, err
        docs.append(json.loads(out))
    refused = [r for _, r in fake_provider.limit_log]
    assert len(refused) == 300  # no call was sent twice
    assert sum(refused) == 0
    for doc in docs:
        states = [a["state"] for a in doc["workflows"][0]["agents"].values()]
        assert states.count("COMPLETED") == 150
