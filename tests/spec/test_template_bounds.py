"""Templates cannot build more than their limit: refused while rendering, fast, in little memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aoe.errors import TemplateRenderError
from aoe.spec.templates import least_size, prompt_char_limit, render

BIG = "a" * 100_000
CONTEXT = {"inputs": {"big": BIG, "rows": list(range(1000))}}

#: Templates that would build gigabytes (or numbers of billions of digits) if let run.
HOSTILE = {
    "string-times": "{{ 'a' * 2000000000 }}",
    "list-times": "{{ ([1] * 2000000000) | length }}",
    "power": "{{ 2 ** 1000000000 }}",
    "squaring": "{% set ns = namespace(n=3) %}{% for i in range(40) %}"
    "{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n }}",
    "percent-width": "{{ '%2000000000s' % 'a' }}",
    "percent-star": "{{ '%*s' % (2000000000, 'a') }}",
    "format-width": "{{ '{:>2000000000}'.format('a') }}",
    "format-nested-width": "{{ '{:>{w}}'.format('a', w=2000000000) }}",
    "format-filter": "{{ '%2000000000s' | format('a') }}",
    "center": "{{ 'a' | center(2000000000) }}",
    "ljust": "{{ 'a'.ljust(2000000000) }}",
    "expandtabs": "{{ '\t'.expandtabs(2000000000) }}",
    "indent": "{{ inputs.big | indent(2000000000) }}",
    "wordwrap": "{{ inputs.big | wordwrap(1, wrapstring=inputs.big) }}",
    "batch": "{{ [1] | batch(2000000000, 'x') | list }}",
    "slice": "{{ [1] | slice(2000000000) | list }}",
    "tojson-indent": "{{ inputs.rows | tojson(indent=100000) }}",
    "join": "{{ range(100000) | map('string') | join(inputs.big) }}",
    "join-method": "{{ inputs.big.join(range(100000) | map('string')) }}",
    "replace": "{{ inputs.big | replace('a', inputs.big) }}",
    "replace-method": "{{ inputs.big.replace('a', inputs.big) }}",
    "doubling-tilde": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
    "doubling-plus": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
    "block-capture": "{% set x %}{% for i in range(100000) %}{{ inputs.big }}{% endfor %}"
    "{% endset %}{{ x | length }}",
    "macro-in-a-loop": "{% macro m() %}{{ inputs.big }}{% endmacro %}"
    "{% for i in range(100000) %}{% set y = m() %}{% endfor %}",
    "many-copies": "{{ ([inputs.big] * 100000) | map('upper') | list | length }}",
    "long-output": "{% for i in range(100000) %}{{ inputs.big }}{% endfor %}",
    "range": "{% for i in range(10 ** 9) %}{% endfor %}",
    "lipsum": "{{ lipsum(1000000) }}",
}

#: How a refusal reads: too much built, too much rendered, or what the sandbox offers not.
_REFUSALS = (
    "template tried to build too much",
    "template renders to more than",
    "Range too big",
    "'lipsum' is undefined",
)

_PROBE = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a bug fails, not the box

    def late(signum, frame):
        raise TimeoutError("still rendering after 5 s")

    signal.signal(signal.SIGALRM, late)
    from aoe.errors import TemplateRenderError
    from aoe.spec.templates import render
    cases, context = json.loads(sys.stdin.read())
    render("{% for i in range(3) %}{{ i | string | upper }}{% endfor %}", context, where="w")
    results = {}
    for name, source in cases.items():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        signal.alarm(5)
        try:
            render(source, context, where="w/agent prompt")
            outcome = "rendered"
        except TemplateRenderError as err:
            outcome = err.message
        except (MemoryError, TimeoutError) as err:
            outcome = f"{type(err).__name__}: {err}"
        finally:
            signal.alarm(0)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        results[name] = {"outcome": outcome, "seconds": time.perf_counter() - started,
                         "rss_growth_kb": after - before}
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def refused() -> dict[str, dict[str, Any]]:
    """Every hostile template rendered once in a fresh interpreter held to 1 GB."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        input=json.dumps([HOSTILE, CONTEXT]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return results


def test_a_prompt_that_would_be_two_gigabytes_fails_in_under_a_second_and_50_mb(
    refused: dict[str, dict[str, Any]],
) -> None:
    """{{ 'a' * 2000000000 }} fails at once, in little memory, saying what it tried."""
    result = refused["string-times"]
    assert "2,000,000,000 characters" in result["outcome"]
    assert result["seconds"] < 1.0
    assert result["rss_growth_kb"] < 50 * 1024


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_way_to_build_a_huge_value_is_refused_fast(
    refused: dict[str, dict[str, Any]], name: str
) -> None:
    """Repetition, widths, joins, replaces, doubling, captures, powers: each is an error
    found before the value is built (under a second, under 50 MB)."""
    result = refused[name]
    assert any(reason in result["outcome"] for reason in _REFUSALS), result
    assert "MemoryError" not in result["outcome"], result  # how a bug shows at 1 GB
    assert result["seconds"] < 1.0, result
    assert result["rss_growth_kb"] < 50 * 1024, result


def test_the_limit_holds_on_both_render_paths_and_errors_say_how_to_raise_it() -> None:
    """A printed value past max_chars fails on the plain-lookup path and through Jinja;
    exactly max_chars renders."""
    context = {"inputs": {"doc": "x" * 1000}}
    assert render("{{ inputs.doc }}", context, where="w", max_chars=1000) == "x" * 1000
    assert render("{{ inputs.doc | trim }}", context, where="w", max_chars=1000) == "x" * 1000
    for source in ("{{ inputs.doc }}!", "{{ inputs.doc | trim }}!"):
        with pytest.raises(TemplateRenderError) as caught:
            render(source, context, where="w/a prompt", max_chars=1000)
        assert caught.value.message == "template renders to more than 1,000 characters"
        assert caught.value.where == "w/a prompt"
        assert "max_prompt_chars" in (caught.value.hint or "")


def test_ordinary_templates_still_render() -> None:
    """Loops, filters, joins, formats and macros well inside the limit are untouched."""
    source = (
        "{% macro row(r) %}{{ '%03d' % r }}{% endmacro %}"
        "{% for r in inputs.rows[:3] %}{{ row(r) }};{% endfor %}"
        "{{ inputs.rows[:3] | join(', ') }} {{ '{:>5}'.format('x') }} {{ 'ab' * 3 }}"
        "{% set t %}{{ 'x' | center(5) }}{% endset %}[{{ t }}]"
    )
    assert render(source, CONTEXT, where="w") == "000;001;002;0, 1, 2     x ababab[  x  ]"


def test_the_default_limit_comes_from_the_context_window() -> None:
    """Without max_prompt_chars: 8 characters per token of a known window, else 1,000,000."""
    assert prompt_char_limit(None, 200_000) == 1_600_000
    assert prompt_char_limit(None, None) == 1_000_000
    assert prompt_char_limit(5_000, 200_000) == 5_000


def test_least_size_reads_what_a_template_says_outright() -> None:
    """Literal text, constant repetition, center widths and constant range loops count;
    data and conditions do not; the line is the largest part's."""
    assert least_size("hello {{ inputs.x }}") == (6, 1)
    assert least_size("a\n{{ 'ab' * 1000 }}") == (2002, 2)
    assert least_size("{% for i in range(100) %}xyz{% endfor %}") == (300, 1)
    assert least_size("{% if inputs.x %}{{ 'a' * 99 }}{% endif %}")[0] == 0


def _workflow(tmp_path: Path, agents: str) -> Path:
    path = tmp_path / "wf.yaml"
    body = textwrap.indent(textwrap.dedent(agents), "  ")
    path.write_text("version: 1\nname: bounds\nagents:\n" + body)
    return path


def test_validate_warns_at_the_line_of_a_template_that_will_be_too_large(
    tmp_path: Path,
) -> None:
    """`aoe validate` passes the file (exit 0) and warns FILE:LINE for a prompt whose own
    text passes its limit, naming the size and the limit."""
    path = _workflow(
        tmp_path,
        """\
        huge:
          model: sim/x
          prompt: "{{ 'a' * 2000000000 }}"
        small:
          model: sim/x
          max_prompt_chars: 10
          prompt: |
            fine
            {{ 'eleven char' }}
        ok:
          model: sim/x
          prompt: "{{ 'x' | upper }} fits"
        """,
    )
    done = subprocess.run(
        [sys.executable, "-m", "aoe", "validate", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{path}:6:13: warning: prompt of 'huge' renders to at least 2,000,000,000" in (
        done.stderr
    )
    assert f"{path}:12:7: warning: prompt of 'small' renders to at least 17 characters, " in (
        done.stderr
    )
    assert "more than its limit of 10" in done.stderr
    assert "'ok'" not in done.stderr
