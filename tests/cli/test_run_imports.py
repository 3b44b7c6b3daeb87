"""`aoe run` loads only what a run needs: its start-up is on the path to the first call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fakeprovider import FakeProvider, fake_provider

__all__ = ["fake_provider"]

ROOT = Path(__file__).resolve().parents[2]

# Runs `aoe run` in this process and prints which heavy libraries were loaded when it
# opened its first connection (to the provider: the run's first call).
_RUN_AND_LIST = (
    "import sys, runpy\n"
    "heavy = ('pydantic', 'genai_prices', 'jsonschema', 'rich')\n"
    "seen = []\n"
    "def first_connect(event, args):\n"
    "    if event == 'socket.connect' and not seen:\n"
    "        seen.append(sorted(m for m in heavy if m in sys.modules))\n"
    "sys.addaudithook(first_connect)\n"
    "sys.argv = ['aoe', 'run', 'wf.yaml', '--no-live']\n"
    "try:\n    runpy.run_module('aoe', run_name='__main__')\n"
    "except SystemExit as stop:\n    print('EXIT', stop.code)\n"
    "print('BEFORE THE FIRST CALL', seen)\n"
)


def _aoe_run(work: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST],
        cwd=work,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OPENAI_API_KEY": "sk-test",
            "AOE_DB": str(work / "ledger.db"),
            "XDG_CACHE_HOME": str(work / "cache"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "EXIT 0" in done.stdout, done.stdout + done.stderr
    return done.stdout


def test_a_valid_run_with_known_prices_loads_no_pydantic(
    tmp_path: Path, fake_provider: FakeProvider
) -> None:
    """Once a model's price is cached, `aoe run --no-live` of a valid file reaches its first
    call without pydantic (Typer 0.29 loads it for every option), genai-prices, jsonschema
    or Rich."""
    (tmp_path / "aoe.yaml").write_text(
        "providers:\n  openai: {type: openai, api_key_env: OPENAI_API_KEY,"
        f" base_url: '{fake_provider.openai_base_url}'}}\n"
    )
    agents = "".join(f"  a{i}:\n    prompt: 'Say {i}.'\n" for i in range(3))
    (tmp_path / "wf.yaml").write_text(
        "version: 1\nname: start\ndefaults: {model: openai/gpt-4o-mini}\nagents:\n" + agents
    )
    _aoe_run(tmp_path)  # the first run caches gpt-4o-mini's price
    assert "BEFORE THE FIRST CALL [[]]" in _aoe_run(tmp_path)
    assert len(fake_provider.billed) == 6
