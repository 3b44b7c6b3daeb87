"""`aoe run` losing Redis mid-run: it stops admitting calls and exits 5, saying why."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import redis.asyncio as aioredis

from tests.coordination.conftest import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def _workflow(tmp_path: Path, count: int = 40) -> Path:
    agents = "".join(
        f"  a{i:02d}:\n    prompt: 'Check invoice {i}'\n    simulate: {{latency_s: 0.2}}\n"
        for i in range(count)
    )
    path = tmp_path / "slow.yaml"
    path.write_text(
        "version: 1\nname: slow\nmax_parallel_agents: 2\n"
        "defaults:\n  model: openai/gpt-4o-mini\n  max_tokens: 50\n"
        "  retry: {max_retries: 0}\n"
        "agents:\n" + agents
    )
    return path


async def test_a_run_that_loses_redis_stops_with_exit_5(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis stopped while a run runs: the run admits no new call, records what was in
    flight, and ends with exit 5 and a message naming the server, never a traceback."""
    db = tmp_path / "aoe.db"
    env = {**os.environ, "AOE_REDIS_URL": own_redis.url, "AOE_DB": str(db), "CI": "true"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aoe", "run", str(_workflow(tmp_path)), "--simulate", "--no-live",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    client = aioredis.Redis.from_url(own_redis.url)
    while int(await client.get("aoe:{budgets}:ids") or 0) < 4:  # four calls reserved
        assert proc.returncode is None
        await asyncio.sleep(0.01)
    await client.aclose()
    await asyncio.to_thread(own_redis.stop)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 5, (out + err).decode()
    text = err.decode()
    assert f"lost Redis at {own_redis.url}" in text
    assert "Traceback" not in text
    with sqlite3.connect(db) as conn:
        (done,) = conn.execute("SELECT count(*) FROM attempts WHERE state = 'COMPLETED'").fetchone()
        (unended,) = conn.execute("SELECT count(*) FROM calls WHERE ended_at IS NULL").fetchone()
        (state,) = conn.execute("SELECT state FROM runs").fetchone()
    assert 2 <= done < 40  # stopped early; what finished is kept for --resume
    assert unended == 0  # every call that went out was recorded as ended
    assert state == "CANCELLED"
