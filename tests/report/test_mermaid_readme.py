"""``aoe plan --format mermaid``: a flowchart GitHub renders, shown in the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATEMENTS = (
    re.compile(r'^    n\d+\["[^"\n]+"\]$'),                      # a node with a quoted label
    re.compile(r"^    n\d+ (-->|==>) n\d+$"),                    # a normal or thick edge
    re.compile(r"^    classDef \w+ [\w:#\-;,.]+;$"),
    re.compile(r"^    class n\d+(,n\d+)* \w+;$"),
    re.compile(r"^    linkStyle \d+(,\d+)* [\w:#\-;,.]+;$"),
)


def _mermaid(workflow: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "aoe", "plan", str(workflow), "--format",
                           "mermaid"], env=env, capture_output=True, text=True, check=True,
                          timeout=60)
    return done.stdout


def test_mermaid_plan_is_valid_flowchart_syntax() -> None:
    """Every line is a flowchart statement GitHub's Mermaid accepts; edges name known nodes."""
    text = _mermaid(ROOT / "workflows" / "invoice-processing.yaml")
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == "flowchart TD"
    for line in lines[1:]:
        assert any(p.match(line) for p in STATEMENTS), line
    nodes = set(re.findall(r"^    (n\d+)\[", text, re.M))
    edges = re.findall(r"^    (n\d+) (?:-->|==>) (n\d+)$", text, re.M)
    assert edges
    assert all(a in nodes and b in nodes for a, b in edges)
    styled = [int(i) for m in re.findall(r"linkStyle ([\d,]+)", text) for i in m.split(",")]
    assert all(i < len(edges) for i in styled)


def test_readme_shows_the_current_mermaid_plan() -> None:
    """The README's example is exactly what aoe prints for invoice-processing today."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Plan as a diagram", 1)[1]
    block = section.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block == _mermaid(ROOT / "workflows" / "invoice-processing.yaml")
