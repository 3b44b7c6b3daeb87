"""Prompt templates: strict sandboxed rendering and the names a template refers to."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoe.errors import TemplateRenderError
from aoe.spec.models import freeze
from aoe.spec.templates import TemplateSyntax, references, render


def test_render_reads_inputs_agents_env_and_with() -> None:
    """A prompt reads inputs, upstream outputs, listed env vars and with parameters."""
    context = {
        "inputs": {"period": "2026-10"},
        "agents": {"extract": {"output": {"vendor": "ACME"}}},
        "env": {"ERP_REGION": "eu"},
        "with": {"tolerance_pct": 2},
    }
    source = (
        "{{ inputs.period }} {{ agents.extract.output.vendor }} {{ env.ERP_REGION }} "
        "{{ with.tolerance_pct }}"
    )
    assert render(source, context, where="w/a prompt") == "2026-10 ACME eu 2"


def test_undefined_name_is_an_error_not_an_empty_string() -> None:
    """A name that is not there stops the render (a model never gets a hole)."""
    with pytest.raises(TemplateRenderError) as caught:
        render(
            "Total: {{ agents.extract.output.total }}",
            {"agents": {"extract": {"output": {}}}},
            where="invoice/route prompt",
        )
    assert caught.value.where == "invoice/route prompt"
    assert "total" in caught.value.message
    assert caught.value.hint is not None


@pytest.mark.parametrize(
    "source", ["{{ ''.__class__.__mro__ }}", "{{ inputs.items.append(1) }}", "{{ 1 / 0 }}"]
)
def test_unsafe_or_failing_templates_are_render_errors(source: str) -> None:
    """Sandbox escapes, mutation and runtime errors all become TemplateRenderError."""
    with pytest.raises(TemplateRenderError):
        render(source, {"inputs": {"items": [1]}}, where="w/a prompt")


def test_structured_values_print_as_json() -> None:
    """Frozen mappings and lists print as JSON, with and without tojson, unescaped."""
    output = freeze({"vendor": "A&B <GmbH>", "lines": [1, 2]})
    context = {"agents": {"x": {"output": output}}}
    expected = '{"vendor": "A&B <GmbH>", "lines": [1, 2]}'
    assert render("{{ agents.x.output }}", context, where="w") == expected
    assert render("{{ agents.x.output | tojson }}", context, where="w") == expected
    assert render("{{ agents.x.output.vendor }}", context, where="w") == "A&B <GmbH>"


def test_references_name_every_kind_with_its_line() -> None:
    """inputs, agents (dotted or quoted), env, with and unknown roots, with first lines."""
    refs = references(
        "{{ inputs.invoice }}\n{{ agents['extract'].output | tojson }}\n{{ env.REGION }}\n"
        "{{ with.tolerance }} {{ agents.match.output }} {{ mystery.x }}"
    )
    assert refs.inputs == {"invoice"}
    assert refs.agents == {"extract", "match"}
    assert refs.env == {"REGION"}
    assert refs.with_keys == {"tolerance"}
    assert refs.unknown == {"mystery"}
    assert refs.line("agents", "extract") == 2
    assert refs.line("with", "tolerance") == 4


def test_references_understand_blocks_loops_and_globals() -> None:
    """Loop variables, set names and Jinja globals are not unknown names."""
    refs = references(
        "{% set total = 0 %}{% for line in agents.extract.output.lines %}"
        "{{ loop.index }} {{ line.qty }} {{ range(3) | list }}{% endfor %}"
        "{% if inputs.strict %}{{ total }}{% endif %}"
    )
    assert refs.agents == {"extract"}
    assert refs.inputs == {"strict"}
    assert refs.unknown == frozenset()


def test_whole_roots_are_reported_separately() -> None:
    """`{{ inputs | tojson }}` reads every input: recorded as a whole-root use."""
    refs = references("{{ inputs | tojson }} {{ agents[name] }}")
    assert refs.whole == {"inputs", "agents"}
    assert refs.inputs == frozenset()


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("line one\n{% if %}x{% endif %}", 2, "Expected an expression"),
        ("{{ inputs.x }\n", 1, "unexpected"),
        ("a\nb\n{{ x | no_such_filter }}", 3, "no filter named 'no_such_filter'"),
        ("{% if x is frobbed %}{% endif %}", 1, "no test named 'frobbed'"),
        ("{% include 'other.txt' %}", 1, "cannot extend, include or import"),
    ],
)
def test_syntax_errors_carry_the_template_line(source: str, line: int, words: str) -> None:
    """A template that cannot work is a TemplateSyntax error at its line."""
    with pytest.raises(TemplateSyntax) as caught:
        references(source)
    assert caught.value.line == line
    assert words in caught.value.message


_NAME = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)
_ROOT = st.sampled_from(["inputs", "agents", "env", "with", "range", "mystery"]) | _NAME
_PIECE = st.one_of(
    st.text(alphabet="abc .\n{}", max_size=6),
    st.builds(lambda r, a: f"{{{{ {r}.{a} }}}}", _ROOT, _NAME),
    st.builds(lambda r, a: f"{{{{ {r}['{a}'] }}}}", _ROOT, _NAME),
    st.builds(lambda r, a: f"{{{{ {r}.{a} | tojson }}}}", _ROOT, _NAME),
    st.builds(lambda r: f"{{{{ {r} }}}}", _ROOT),
    st.builds(lambda r: f"{{{{ {r}[0].x }}}}", _ROOT),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECE, max_size=6).map("".join))
def test_fast_path_agrees_with_the_parser(source: str) -> None:
    """The regex fast path and Jinja's parser find the same names on the same lines."""
    forced = "{# force the parser #}" + source
    fast_line = slow_line = 0
    try:
        fast = references(source)
    except TemplateSyntax as err:
        fast_line = err.line
    try:
        slow = references(forced)
    except TemplateSyntax as err:
        slow_line = err.line
    assert fast_line == slow_line
    if fast_line:
        return
    assert (fast.inputs, fast.agents, fast.env, fast.with_keys, fast.unknown, fast.whole) == (
        slow.inputs,
        slow.agents,
        slow.env,
        slow.with_keys,
        slow.unknown,
        slow.whole,
    )
    assert dict(fast.lines) == dict(slow.lines)


def test_references_are_immutable() -> None:
    """What references() returns is cached, so it must be read-only."""
    refs = references("{{ inputs.a }}")
    assert isinstance(refs.lines, MappingProxyType)
    with pytest.raises(AttributeError):
        refs.inputs = frozenset()  # type: ignore[misc]
