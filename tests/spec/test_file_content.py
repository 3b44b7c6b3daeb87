"""An error about a file aoe was pointed at, but not asked to read as YAML of its own,
never quotes what is inside it (a workflow naming ../../etc/passwd leaks nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SECRET = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


@pytest.mark.parametrize(
    "secret_text",
    [SECRET + "\n", f"- {SECRET}\n", "42\n", f"root:x:0:0:{SECRET}:/root:/bin/bash\n"],
    ids=["text", "list", "number", "passwd-line"],
)
def test_uses_of_a_file_that_is_no_agent_or_tools_file_does_not_quote_it(
    tmp_path: Path, secret_text: str
) -> None:
    """`uses:` of an agent and of a tools file, and `--inputs`, naming a file that holds
    text, a list or a number: exit 2, the file named and its type said, nothing of it
    quoted, on the terminal or in JSON."""
    secret = tmp_path / "secrets" / "env"
    secret.parent.mkdir()
    secret.write_text(secret_text)
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "wf.yaml").write_text(
        "version: 1\nname: leak\nagents:\n  a: {uses: ../secrets/env}\n"
        "  b: {model: sim/x, prompt: hi, tools: [t]}\ntools:\n  t: {uses: ../secrets/env}\n"
    )
    (flows / "ok.yaml").write_text("version: 1\nagents:\n  a: {model: sim/x, prompt: hi}\n")
    runs = [
        ["validate", "flows/wf.yaml"],
        ["run", "flows/ok.yaml", "--simulate", "--inputs", "secrets/env"],
    ]
    for args in runs:
        done = subprocess.run(
            [sys.executable, "-m", "aoe", *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        said = done.stdout + done.stderr
        assert "secrets/env" in said
        assert secret_text.strip().lstrip("- ") not in said
        assert "wJalrXUtnFEMI" not in said
        assert ("holds a" in said) or ("must hold a mapping" in said), said


def test_a_workflow_file_aoe_was_asked_to_read_is_still_quoted_where_it_helps(
    tmp_path: Path,
) -> None:
    """The workflow named on the command line is the user's own: its wrong value is shown."""
    path = tmp_path / "wf.yaml"
    path.write_text("just a line of text\n")
    done = subprocess.run(
        [sys.executable, "-m", "aoe", "validate", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "just a line of text" in done.stderr
