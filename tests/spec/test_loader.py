"""Loading workflows: merged, typed, immutable specs, or every problem of the file at once."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

import aoe.spec
from aoe.errors import Problem, SpecError, UsageError
from aoe.spec import load_workflow
from aoe.spec.models import ModelRef, RetrySpec

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
SHIPPED = sorted(WORKFLOWS.glob("*.yaml"))


def _write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(SpecError) as caught:
        load_workflow(path)
    return list(caught.value.problems)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_workflows_load(path: Path) -> None:
    """Every example in workflows/ loads, and starts with the editor schema line."""
    spec = load_workflow(path)
    assert spec.agents
    assert path.read_text().startswith("# yaml-language-server: $schema=")


def test_invoice_workflow_merges_defaults_agent_file_and_entry() -> None:
    """defaults < uses: file < the agent entry; retry and simulate merge key by key."""
    spec = load_workflow(WORKFLOWS / "invoice-processing.yaml")
    match = spec.agents["three_way_match"]
    assert match.uses == "agents/three-way-match.yaml"
    assert match.with_values == {"tolerance_pct": 2, "currency": "USD"}
    assert match.priority == 8  # from the agent file
    assert match.max_tokens == 600  # the file wins over defaults (800)
    assert match.timeout_s == 60.0  # only defaults set it
    assert match.retry == RetrySpec(
        max_retries=2,
        strategy="exponential",
        base_delay_s=1.0,
        max_delay_s=20.0,
        exponential_base=2.0,
        jitter=True,
    )
    assert match.simulate.latency_s == 0.8  # the entry overrides the file ...
    assert match.simulate.output_tokens == 180  # ... key by key
    assert match.needs == ("extract",)
    assert match.prompt_location is not None
    assert match.prompt_location.file.endswith("three-way-match.yaml")
    assert match.output_schema is not None
    assert match.output_schema["required"] == ("matched", "mismatches")
    extract = spec.agents["extract"]
    assert extract.model == ModelRef("openai", "gpt-4o-mini")
    assert extract.temperature == 0.0
    assert extract.module == "accounts_payable"
    assert spec.inputs["approval_limit_usd"].default == 5000
    assert not spec.inputs["approval_limit_usd"].required


def test_locations_point_at_the_agent_and_its_prompt(tmp_path: Path) -> None:
    """Each agent knows its key's place and where line 1 of its prompt is."""
    path = _write(
        tmp_path,
        """
        version: 1
        agents:
          a:
            model: sim/fast
            prompt: |
              first line
              second line
    """,
    )
    agent = load_workflow(path).agents["a"]
    assert (agent.location.line, agent.location.col) == (3, 3)
    assert agent.prompt_location is not None
    assert (agent.prompt_location.line, agent.prompt_location.col) == (6, 7)


def test_specs_are_immutable(tmp_path: Path) -> None:
    """Nothing downstream can change a loaded spec or its JSON data."""
    spec = load_workflow(WORKFLOWS / "invoice-processing.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.agents["extract"].priority = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.agents["extract"].output_schema["type"] = "array"  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.agents["x"] = spec.agents["extract"]  # type: ignore[index]


def test_name_defaults_to_the_file_name(tmp_path: Path) -> None:
    """A workflow without name: is named after its file."""
    path = _write(tmp_path, "version: 1\nagents: {a: {model: sim/x, prompt: hi}}\n", "close.yaml")
    assert load_workflow(path).name == "close"


def test_every_problem_of_a_file_is_reported_in_order(tmp_path: Path) -> None:
    """Schema, template and reference problems of one file come back together, by line."""
    path = _write(
        tmp_path,
        """
        version: 1
        agents:
          a:
            model: sim/x
            prompt: "{{ inputs.nope }}"
            priority: 11
          b:
            prompt: hi
          c:
            model: sim/x
            prompt: "{% if %}"
    """,
    )
    problems = _problems(path)
    assert [p.line for p in problems] == [5, 6, 7, 11]
    assert "no input 'nope'" in problems[0].message
    assert "has no model" in problems[2].message
    assert "template syntax error" in problems[3].message


def test_template_error_lines_count_inside_block_prompts(tmp_path: Path) -> None:
    """A template problem on line 3 of a `prompt: |` block points at that file line."""
    path = _write(
        tmp_path,
        """
        version: 1
        env: [REGION]
        agents:
          a:
            model: sim/x
            prompt: |
              Hello
              {{ env.REGION }}
              {{ env.SECRET_TOKEN }}
    """,
    )
    [problem] = _problems(path)
    assert (problem.line, problem.col) == (9, 7)
    assert "'SECRET_TOKEN' is not listed under env:" in problem.message


def test_unknown_template_root_gets_a_suggestion(tmp_path: Path) -> None:
    """`{{ input.x }}` is an unknown name with a hint towards `inputs`."""
    path = _write(
        tmp_path,
        """
        version: 1
        agents:
          a: {model: sim/x, prompt: "{{ input.x }}"}
    """,
    )
    [problem] = _problems(path)
    assert "template names 'input', which is not defined" in problem.message
    assert problem.hint == "did you mean 'inputs'?"


def _agent_file(tmp_path: Path, text: str, name: str = "agents/match.yaml") -> None:
    _write(tmp_path, text, name)


def test_uses_resolves_relative_to_the_naming_file(tmp_path: Path) -> None:
    """An agent file that uses another resolves each path from its own folder."""
    _agent_file(
        tmp_path,
        """
        uses: base/core.yaml
        with: {strict: true}
        parameters:
          tolerance_pct: {type: number, default: 1}
        prompt: "Match within {{ with.tolerance_pct }} (strict={{ with.strict }})"
    """,
    )
    _agent_file(
        tmp_path,
        """
        model: sim/matcher
        parameters:
          strict: {type: boolean}
        prompt: base prompt
        retry: {max_retries: 5}
    """,
        "agents/base/core.yaml",
    )
    path = _write(
        tmp_path,
        """
        version: 1
        agents:
          m:
            uses: agents/match.yaml
            with: {tolerance_pct: 3}
    """,
    )
    agent = load_workflow(path).agents["m"]
    assert agent.model == ModelRef("sim", "matcher")
    assert agent.prompt.startswith("Match within")
    assert agent.retry.max_retries == 5
    assert agent.with_values == {"strict": True, "tolerance_pct": 3}


@pytest.mark.parametrize(
    ("entry", "line", "words"),
    [
        ("uses: agents/missing.yaml", 4, "agents/missing.yaml does not exist"),
        ("uses: agents/match.yaml\n    with: {tolerence_pct: 2}", 5, "has no parameter"),
        ("uses: agents/match.yaml", 4, "parameter 'tolerance_pct' of"),
        ("uses: agents/match.yaml\n    with: {tolerance_pct: two}", 5, "expected number"),
        ("uses: agents/loop.yaml", 4, "loop of uses: loop.yaml -> loop.yaml"),
        ("uses: agents/broken.yaml", 4, "is not a valid agent file"),
        ("model: sim/x\n    prompt: hi\n    with: {a: 1}", 6, "with: only applies"),
    ],
)
def test_uses_and_with_problems_point_at_the_workflow(
    tmp_path: Path, entry: str, line: int, words: str
) -> None:
    """Bad uses: paths, loops, invalid files and bad with: values are found at their line."""
    _agent_file(
        tmp_path,
        """
        model: sim/x
        parameters:
          tolerance_pct: {type: number}
        prompt: "within {{ with.tolerance_pct }}"
    """,
    )
    _agent_file(tmp_path, "uses: loop.yaml\n", "agents/loop.yaml")
    _agent_file(tmp_path, "model: sim/x\npromt: typo\n", "agents/broken.yaml")
    path = _write(tmp_path, f"version: 1\nagents:\n  a:\n    {entry}\n")
    problems = _problems(path)
    assert any(p.file == str(path) and p.line == line and words in p.message for p in problems), (
        problems
    )


def test_invalid_agent_file_problems_are_reported_in_that_file(tmp_path: Path) -> None:
    """The agent file's own mistakes are listed at its lines, after the workflow's."""
    _agent_file(tmp_path, "model: sim/x\npromt: typo\n", "agents/broken.yaml")
    path = _write(tmp_path, "version: 1\nagents:\n  a:\n    uses: agents/broken.yaml\n")
    problems = _problems(path)
    assert problems[0].file == str(path)
    assert problems[-1].file == str(tmp_path / "agents" / "broken.yaml")
    assert (problems[-1].line, problems[-1].hint) == (2, "did you mean 'prompt'?")


def test_output_schema_must_be_a_json_schema(tmp_path: Path) -> None:
    """An output_schema that is not a JSON Schema is reported at the broken node."""
    path = _write(
        tmp_path,
        """
        version: 1
        agents:
          a:
            model: sim/x
            prompt: hi
            output_schema: {type: object, minProperties: -1}
    """,
    )
    [problem] = _problems(path)
    assert problem.line == 6
    assert "minProperties" in problem.message
    assert "not a valid JSON Schema" in problem.message


def test_tools_are_typed_and_checked(tmp_path: Path) -> None:
    """Tools become ToolSpecs; an agent naming an undefined tool gets a suggestion."""
    good = _write(
        tmp_path,
        """
        version: 1
        agents:
          a: {model: sim/x, prompt: hi, tools: [lookup_vendor]}
        tools:
          lookup_vendor:
            description: Look a vendor up
            parameters: {type: object, properties: {name: {type: string}}}
            command: [erp, lookup]
    """,
    )
    tool = load_workflow(good).tools["lookup_vendor"]
    assert (tool.kind, tuple(tool.target["argv"])) == ("command", ("erp", "lookup"))
    assert load_workflow(good).agents["a"].tools == ("lookup_vendor",)
    bad = _write(tmp_path, good.read_text().replace("tools: [lookup_vendor]", "tools: [lookup]"))
    [problem] = _problems(bad)
    assert (problem.line, problem.hint) == (3, "did you mean 'lookup_vendor'?")


def test_input_default_must_match_its_type(tmp_path: Path) -> None:
    """A default of the wrong type is an error at the default."""
    path = _write(
        tmp_path,
        """
        version: 1
        inputs:
          limit: {type: integer, default: lots}
        agents: {a: {model: sim/x, prompt: "{{ inputs.limit }}"}}
    """,
    )
    [problem] = _problems(path)
    assert (problem.line, problem.message) == (
        3,
        "inputs.limit.default: expected integer, got a string ('lots')",
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- a\n- b\n", "must be a mapping of keys"),
        ("version: 2\nagents: {}\n", "version: 2 is not supported"),
        ("version: true\nagents: {}\n", "version: True is not supported"),
    ],
)
def test_file_level_refusals(tmp_path: Path, text: str, words: str) -> None:
    """A list, another version or no version stop loading with one clear problem."""
    [problem] = _problems(_write(tmp_path, text))
    assert words in problem.message


def test_unreadable_path_is_a_usage_error(tmp_path: Path) -> None:
    """A path that does not exist or is a folder is a usage error, not a spec error."""
    with pytest.raises(UsageError, match="not found"):
        load_workflow(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="directory"):
        load_workflow(tmp_path)


def test_spec_package_exports_and_stays_light() -> None:
    """aoe.spec exports the four entry points, and importing models pulls in no parser."""
    assert sorted(aoe.spec.__all__) == [
        "load_config",
        "load_workflow",
        "parse_input_args",
        "resolve_inputs",
    ]
    assert all(callable(getattr(aoe.spec, name)) for name in aoe.spec.__all__)
    code = (
        "import sys, aoe.spec.models; "
        "print(sorted(m for m in ('yaml', 'jsonschema', 'jinja2') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_whole_numbers_written_as_floats_become_ints(tmp_path: Path) -> None:
    """`max_retries: 2.0` is valid JSON Schema `integer`; the spec holds the int 2."""
    path = tmp_path / "w.yaml"
    path.write_text(
        "version: 1\nname: t\nmax_parallel_agents: 2.0\nagents:\n"
        "  a: {model: sim/x, prompt: hi, simulate: {output_tokens: 10.0},"
        " retry: {max_retries: 2.0}}\n"
    )
    spec = load_workflow(path)
    agent = spec.agents["a"]
    assert (spec.max_parallel_agents, agent.retry.max_retries, agent.simulate.output_tokens) == (
        2, 2, 10)
    assert all(type(v) is int for v in (spec.max_parallel_agents, agent.retry.max_retries))
