"""Where the coordinator is configured, and a run that cannot reach it at the start."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from aoe.cli.main import main
from aoe.coordination.connection import (
    CoordinationSettings,
    CoordinationUnavailableError,
    connect,
    key_hash,
    redact_url,
    settings_for,
)
from aoe.errors import SpecError
from aoe.spec.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FLOW = ROOT / "workflows" / "invoice-processing.yaml"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is


def test_redis_url_comes_from_aoe_yaml_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """coordination.redis_url in aoe.yaml sets the coordinator; AOE_REDIS_URL overrides it."""
    cfg = tmp_path / "aoe.yaml"
    cfg.write_text("coordination: {redis_url: 'redis://10.0.0.5:6379/1', permit_ttl_s: 12}\n")
    config = load_config(cfg)
    settings = settings_for(config, environ={})
    assert settings is not None
    assert settings.redis_url == "redis://10.0.0.5:6379/1"
    assert settings.permit_ttl_s == 12
    assert "aoe.yaml" in settings.source
    over = settings_for(config, environ={"AOE_REDIS_URL": "redis://cache:6379/0"})
    assert over is not None
    assert (over.redis_url, over.source) == ("redis://cache:6379/0", "AOE_REDIS_URL")
    assert settings_for(load_config(None), environ={}) is None


def test_a_bad_coordination_entry_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    """A typo under coordination: or budgets: is refused at its line, before anything runs."""
    cfg = tmp_path / "aoe.yaml"
    cfg.write_text(
        "coordination: {redis_url: 'http://x'}\nbudgets: {finance: {usd: 0, period: fortnight}}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_config(cfg)
    lines = sorted(p.line for p in caught.value.problems)
    assert lines[0] == 1
    assert 2 in lines


def test_passwords_never_show_in_a_url_aoe_prints() -> None:
    """An error names the Redis server it could not reach, never its password."""
    assert redact_url("redis://:s3cret@db:6379/0") == "redis://***@db:6379/0"
    assert redact_url("rediss://app:s3cret@db:6380/2") == "rediss://app:***@db:6380/2"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "s3cret" not in key_hash("openai", "https://api.openai.com/v1", "s3cret")


async def test_connect_refuses_a_server_that_is_not_there() -> None:
    """connect() fails with exit 2 and says where, what and how to fix, without the password."""
    url = f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"
    with pytest.raises(CoordinationUnavailableError) as caught:
        await connect(CoordinationSettings(url, "AOE_REDIS_URL"))
    err = caught.value
    assert err.exit_code == 2
    assert "hunter2" not in str(err)
    assert "hunter2" not in (err.hint or "")
    assert "redis://***@127.0.0.1" in err.message
    assert err.where == "AOE_REDIS_URL"
    assert "redis-server" in (err.hint or "")


def test_aoe_run_does_not_start_when_redis_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aoe run` with an unreachable Redis exits 2 with a clear message and records no run."""
    port = _closed_port()
    monkeypatch.setenv("AOE_REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    db = tmp_path / "ledger.db"
    code = main(["run", str(FLOW), "--simulate", "--no-live", "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot reach Redis at redis://***@127.0.0.1:{port}/0" in err
    assert "hint:" in err
    assert "hunter2" not in err
    assert "Traceback" not in err
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_aoe_run_with_a_live_redis_completes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A simulated run with AOE_REDIS_URL set runs to completion on the shared limits."""
    monkeypatch.setenv("AOE_REDIS_URL", redis_url)
    code = main(["run", str(FLOW), "--simulate", "--no-live"])
    assert code == 0, capsys.readouterr().err
    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.keys("aoe:*")]
    client.close()
    assert any(k.endswith(":state") for k in keys), keys  # the limits lived in Redis


_WITHOUT_REDIS = """
import sys
class Block:
    def find_spec(self, name, path, target=None):
        if name == "redis" or name.startswith("redis."):
            raise ImportError("redis is not installed", name="redis")
sys.meta_path.insert(0, Block())
from aoe.cli.main import main
code = main(["run", sys.argv[1], "--simulate", "--no-live"])
print("redis imported:", "redis" in sys.modules)
sys.exit(code)
"""


def test_runs_without_a_coordinator_never_need_the_redis_extra(tmp_path: Path) -> None:
    """Without a Redis URL aoe runs with redis-py absent; with one, it says to install it."""
    env = {k: v for k, v in os.environ.items() if k != "AOE_REDIS_URL"}
    env["AOE_DB"] = str(tmp_path / "aoe.db")
    args = [sys.executable, "-c", _WITHOUT_REDIS, str(FLOW)]
    alone = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert alone.returncode == 0, alone.stderr
    assert "redis imported: False" in alone.stdout
    env["AOE_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    fleet = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert fleet.returncode == 2
    assert "pip install 'aoe[redis]'" in fleet.stderr
