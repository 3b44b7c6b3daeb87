"""The error corpus: every malformed file gets exit 2 and one clear FILE:LINE: message.

Each ``tests/corpus/bad/*.yaml`` starts with ``# expect: <line> <substring>``: the line
the first relevant problem must point at and words its message must contain. Files the
corpus cannot hold (a zero-byte file, a file over the size cap) are made in tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aoe.errors import SpecError
from aoe.spec.yamlload import MAX_FILE_BYTES

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus" / "bad"
CASES = sorted(CORPUS.glob("*.yaml"))


def _expectation(path: Path) -> tuple[int, str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    line, _, text = first.removeprefix("# expect: ").partition(" ")
    return int(line), text


def _flat(text: str) -> str:
    """Output with line wrapping undone, so a long message still matches."""
    return " ".join(text.split())


def _invoke(monkeypatch: pytest.MonkeyPatch, directory: Path, name: str) -> tuple[int, str]:
    from aoe.cli.main import app

    monkeypatch.chdir(directory)
    result = CliRunner().invoke(app, ["validate", name], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_corpus_is_large_enough() -> None:
    """The corpus covers at least 45 kinds of broken workflow files."""
    assert len(CASES) >= 45


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_cli_reports_bad_file(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """`aoe validate` on a broken file exits 2 and names the file, line and problem."""
    line, expected = _expectation(path)
    code, output = _invoke(monkeypatch, CORPUS, path.name)
    assert code == 2, output
    assert f"{path.name}:{line}:" in output, output
    assert _flat(expected) in _flat(output), output
    assert "Traceback" not in output


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_library_reports_bad_file(path: Path) -> None:
    """The library raises a SpecError (never another exception) at the expected line."""
    from aoe.app.validate import check_workflow

    line, expected = _expectation(path)
    with pytest.raises(SpecError) as caught:
        check_workflow(path)
    problems = caught.value.problems
    assert any(
        p.line == line and Path(p.file).name == path.name and expected in p.message
        for p in problems
    ), "\n".join(str(p) for p in problems)


def test_zero_byte_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A zero-byte file is reported as empty at line 1, not as a crash."""
    (tmp_path / "empty.yaml").write_bytes(b"")
    code, output = _invoke(monkeypatch, tmp_path, "empty.yaml")
    assert code == 2
    assert "empty.yaml:1:" in output
    assert "file is empty" in output


def test_huge_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A file over the size cap is refused before it is read, naming the cap."""
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as out:
        out.write(b"version: 1\n")
        out.truncate(MAX_FILE_BYTES + 1)  # sparse: the test does not write 20 MB
    code, output = _invoke(monkeypatch, tmp_path, "huge.yaml")
    assert code == 2
    assert "huge.yaml:1:" in output
    assert f"{MAX_FILE_BYTES // 1_048_576} MB" in output


def test_missing_file_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Naming a file that does not exist exits 2 with its name, not a traceback."""
    code, output = _invoke(monkeypatch, tmp_path, "nope.yaml")
    assert code == 2
    assert "nope.yaml" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("name", ["yaml-unclosed-quote.yaml", "binary.yaml", "uses-loop.yaml"])
def test_real_process_shows_no_traceback(name: str) -> None:
    """Run as a user does (`python -m aoe validate`): a message and exit 2, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("AOE_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "aoe", "validate", name],
        cwd=CORPUS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line, expected = _expectation(CORPUS / name)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"{name}:{line}:" in output
    assert expected in output
    assert "Traceback" not in output
