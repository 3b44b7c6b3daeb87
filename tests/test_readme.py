"""The README's workflow example is a valid workflow, as a reader would save it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from aoe.app.validate import check_workflow

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_workflow_example_validates(tmp_path: Path) -> None:
    """Saved next to the shipped agents/ and tools/ folders, the example passes aoe validate."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A workflow file", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    for folder in ("agents", "tools"):
        shutil.copytree(ROOT / "workflows" / folder, tmp_path / folder)
    path = tmp_path / "example.yaml"
    path.write_text(example.group(1))
    checked = check_workflow(path)
    assert set(checked.spec.agents) == {"extract", "check_vendor", "three_way_match"}
