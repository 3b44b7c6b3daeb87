"""Plain-lookup prompts render without Jinja's compiler, with exactly Jinja's result."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aoe.errors import TemplateRenderError
from aoe.spec.templates import _render_jinja, render

keys = st.sampled_from(["vendor", "total", "lines", "q", "a_b", "x1"])
leaves = st.one_of(
    st.text(max_size=8), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()
)
data = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)
steps = st.lists(
    st.one_of(
        keys.map(lambda k: f".{k}"),
        keys.map(lambda k: f"['{k}']"),
        st.integers(0, 3).map(lambda i: f"[{i}]"),
    ),
    max_size=4,
)


def _outcome(fn: Any, source: str, context: Any) -> tuple[str, str]:
    try:
        return ("ok", fn(source, context, where="t"))
    except TemplateRenderError as err:
        return ("error", err.message.split(":")[0])


@given(data, steps, st.text(alphabet="ab \n{}%#", max_size=6))
def test_fast_path_and_jinja_agree(value: Any, path: list[str], literal: str) -> None:
    """Whatever the data and the lookup, the prompt text (or the error) is Jinja's."""
    context = {"inputs": MappingProxyType({"doc": value}), "agents": {}, "with": {}, "env": {}}
    source = f"{literal}{{{{ inputs.doc{''.join(path)} }}}}{literal}"
    try:
        expected = _outcome(_render_jinja, source, context)
    except Exception:
        return
    assert _outcome(render, source, context) == expected
