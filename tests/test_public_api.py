"""The library API: what `import aoe` offers, sorted and importable, without heavy imports."""

from __future__ import annotations

import subprocess
import sys

import aoe


def test_all_is_sorted_and_every_name_resolves() -> None:
    """Every public name is listed once, in order, and imports."""
    assert aoe.__all__ == sorted(set(aoe.__all__))
    for name in aoe.__all__:
        assert getattr(aoe, name) is not None


def test_import_aoe_loads_nothing_heavy() -> None:
    """`import aoe` stays cheap: names load on first use."""
    heavy = "('networkx', 'httpx', 'jsonschema', 'rich', 'yaml')"
    code = f"import sys, aoe; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
