"""Peak memory with 500 agents in flight at once against the loopback provider server.

    python bench/bench_rss.py [AGENTS]

The loopback server (tests/fakeprovider.py, OpenAI wire format) runs in this process
and holds every call for 2 s, so all agents are in flight together; `aoe run` runs as a
child process with real HTTP over one pooled httpx client, the SQLite ledger and plain
progress output. Its peak RSS comes from wait4(2) for that child alone. Target: under
100 MB.

Two runs: a local model served by the loopback server (`local/llama-3.1-8b-instruct`,
as vLLM or llama.cpp would serve it), and an OpenAI model (`openai/gpt-4o-mini`) behind
the same compatible base_url. Since issue 12 both are estimated from bytes: only a budget
at OpenAI's own API loads the 200,000-token o200k vocabulary (about 76 MB, whatever the
number of agents). bench/bench_outputs.py measures the same with a budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakeprovider import FakeProvider


def main(count: int = 500) -> None:
    for model in ("local/llama-3.1-8b-instruct", "openai/gpt-4o-mini"):
        measure(count, model)


def measure(count: int, model: str) -> None:
    server = FakeProvider(latency_s=2.0)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            limits = (
                "limits: {requests_per_minute: 100000, tokens_per_minute: 100000000,"
                " concurrent_requests: 10000}"
            )
            provider = model.split("/", maxsplit=1)[0]
            (work / "aoe.yaml").write_text(
                "providers:\n"
                f"  {provider}: {{type: openai, api_key_env: OPENAI_API_KEY,"
                f" base_url: '{server.openai_base_url}', {limits}}}\n"
                f"pricing: {{{model}: {{input_per_mtok: 0, output_per_mtok: 0}}}}\n"
            )
            agents = "".join(
                f"  a{i:04d}:\n    prompt: 'Match invoice {i} against its purchase order.'\n"
                for i in range(count)
            )
            (work / "wf.yaml").write_text(
                f"version: 1\nname: rss\ndefaults: {{model: {model}, max_tokens: 100}}\n"
                "agents:\n" + agents
            )
            env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "AOE_DB": str(work / "l.db")}
            proc = subprocess.Popen(
                [sys.executable, "-m", "aoe", "run", "wf.yaml", "--no-live", "--json"],
                cwd=work,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        server.stop()
    print(f"model                 {model}")
    print(f"agents                {count}")
    print(f"exit code             {proc.returncode}")
    print(f"calls served          {server.calls()}")
    print(f"peak calls in flight  {server.peak_in_flight}")
    print(f"peak RSS of aoe run   {usage.ru_maxrss / 1024:.1f} MB (target < 100 MB)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
