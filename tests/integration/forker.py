"""A fork server for the SIGKILL tests: aoe imported once, then a real process per command.

    python tests/integration/forker.py

Starting ``python -m aoe`` costs about a second of imports; twenty kill-and-resume trials
would spend most of their time there. This process imports aoe (and loads the tokenizer)
once, before any thread or event loop exists, then forks a child for each command it
reads on stdin. Each child is an ordinary aoe process (its own ledger connections, writer
thread, event loop and HTTP client) that a test SIGKILLs like any other.

    run {"args": [...], "env": {...}, "out": PATH, "err": PATH}   ->  the child's pid
    wait PID      ->  its exit code once it ended (-9 when SIGKILLed)
    poll PID      ->  its exit code if it ended, else "running"
"""

from __future__ import annotations

import json
import os
import sys

# what `aoe run` imports as it runs (aoe.cli.run_cmd), imported once here for every child
import aoe.app.prepare
import aoe.app.run
import aoe.monitor.outputs
import aoe.providers.openai
import aoe.report.outputs
import aoe.report.result
import aoe.ui.session
import aoe.ui.summary  # noqa: F401
from aoe.cli import ledger_cmd, plan_cmd, report_cmd, run_cmd, validate_cmd  # noqa: F401
from aoe.cli.main import main
from aoe.cost.pricing import PriceBook
from aoe.cost.tokens import preload
from aoe.spec.models import Config, ModelRef


def _child(spec: dict[str, object]) -> None:
    out = os.open(str(spec["out"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(str(spec["err"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.environ.update(spec["env"])  # type: ignore[arg-type]
    args = [str(a) for a in spec["args"]]  # type: ignore[attr-defined]
    sys.argv = ["aoe", *args]
    code = 1
    try:
        code = main(args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    model = ModelRef("openai", "gpt-4o-mini")
    preload({model})  # its tokenizer
    PriceBook.from_config(Config(providers={})).is_known(model)  # and the bundled price snapshot
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        if command == "run":
            pid = os.fork()
            if pid == 0:
                _child(json.loads(rest))
            print(pid, flush=True)
        elif command in ("wait", "poll"):
            flags = os.WNOHANG if command == "poll" else 0
            pid, status = os.waitpid(int(rest), flags)
            print(os.waitstatus_to_exitcode(status) if pid else "running", flush=True)


if __name__ == "__main__":
    serve()
