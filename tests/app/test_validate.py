"""check_workflow / check_files: every problem of a file, from loader, graph and templates."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

from aoe.app.validate import CheckedWorkflow, check_files, check_workflow
from aoe.errors import SpecError

SEED = """\
version: 1
name: seed
budget_usd: 0.5
agents:
  A:
    model: sim/fast
    module: accounts_payable
    prompt: Start the batch.
    simulate: {latency_s: 1}
  B:
    model: sim/fast
    needs: [A]
    prompt: "Check {{ agents.A.output }}"
    simulate: {latency_s: 2}
  C:
    model: sim/fast
    needs: [A]
    prompt: "Classify {{ agents.A.output }}"
    simulate: {latency_s: 1.5}
  D:
    model: sim/fast
    needs: [B]
    prompt: "Match {{ agents.B.output }} against {{ agents.A.output }}"
    simulate: {latency_s: 3}
  E:
    model: sim/fast
    needs: [C, D]
    prompt: "Route {{ agents.C.output }} and {{ agents.D.output }}"
    simulate: {latency_s: 0.5}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[tuple[int, str]]:
    with pytest.raises(SpecError) as info:
        check_workflow(path)
    assert all(p.file.endswith(path.name) for p in info.value.problems)
    return [(p.line, p.message) for p in info.value.problems]


def test_seed_workflow_checks_and_plans(tmp_path: Path) -> None:
    """The seed example validates, with levels [A] [B, C] [D] [E] and path A-B-D-E."""
    checked = check_workflow(write(tmp_path, "seed.yaml", SEED))
    assert isinstance(checked, CheckedWorkflow)
    assert checked.graph.levels == (("A",), ("B", "C"), ("D",), ("E",))
    assert checked.graph.critical_path == ("A", "B", "D", "E")
    assert checked.graph.critical_path_s == pytest.approx(6.5)


def test_prompt_may_read_any_transitive_upstream_agent(tmp_path: Path) -> None:
    """D reads A's output without listing A: A is upstream through B."""
    checked = check_workflow(write(tmp_path, "seed.yaml", SEED))
    assert "A" not in checked.spec.agents["D"].needs


def test_prompt_reading_an_agent_that_is_not_upstream_is_an_error(tmp_path: Path) -> None:
    """A prompt that reads a sibling's output is caught before any money is spent."""
    text = SEED.replace('"Classify {{ agents.A.output }}"', '"Classify {{ agents.B.output }}"')
    (found,) = problems(write(tmp_path, "w.yaml", text))
    line, message = found
    assert message == "prompt of 'C' uses agents.B, but 'B' is not upstream of 'C'; add it to needs"
    assert line == 18  # the prompt's line


def test_prompt_reading_a_missing_agent_suggests_the_closest(tmp_path: Path) -> None:
    """A typo in agents.<id> is reported with a did-you-mean hint."""
    text = SEED.replace('"Route {{ agents.C.output }}', '"Route {{ agents.CC.output }}')
    with pytest.raises(SpecError) as info:
        check_workflow(write(tmp_path, "w.yaml", text))
    (problem,) = info.value.problems
    assert "agents.CC, which is no agent" in problem.message
    assert problem.hint == "did you mean 'C'?"


def test_system_template_is_checked_too(tmp_path: Path) -> None:
    """The system prompt is a template like the prompt and follows the same rule."""
    text = SEED.replace(
        "    prompt: Start the batch.\n",
        '    prompt: Start the batch.\n    system: "You know {{ agents.E.output }}"\n',
    )
    ((_, message),) = problems(write(tmp_path, "w.yaml", text))
    assert message.startswith("system of 'A' uses agents.E, but 'E' is not upstream of 'A'")


def test_graph_and_template_problems_are_listed_together(tmp_path: Path) -> None:
    """One validate run lists a bad need and a bad template reference, in file order."""
    text = SEED.replace("needs: [B]", "needs: [Bee]").replace(
        '"Classify {{ agents.A.output }}"', '"Classify {{ agents.E.output }}"'
    )
    found = problems(write(tmp_path, "w.yaml", text))
    assert [line for line, _ in found] == sorted(line for line, _ in found)
    messages = " | ".join(m for _, m in found)
    assert "'D' needs 'Bee', which is no agent" in messages
    assert "prompt of 'C' uses agents.E" in messages
    assert "prompt of 'D' uses agents.B" in messages  # B is no longer upstream of D


def test_cycle_is_reported_with_its_path(tmp_path: Path) -> None:
    """A dependency cycle in a file is an error naming the cycle."""
    text = SEED.replace(
        "  A:\n    model: sim/fast\n", "  A:\n    model: sim/fast\n    needs: [E]\n"
    )
    messages = [m for _, m in problems(write(tmp_path, "w.yaml", text))]
    assert "dependency cycle: A -> B -> D -> E -> A" in messages


def test_loader_problems_come_through(tmp_path: Path) -> None:
    """A file the loader rejects reports the loader's problems with the file name."""
    path = write(tmp_path, "broken.yaml", "version: 1\nagents: [\n")
    with pytest.raises(SpecError) as info:
        check_workflow(path)
    assert info.value.problems[0].file.endswith("broken.yaml")


def test_check_files_checks_every_file(tmp_path: Path) -> None:
    """One bad file does not stop the others from being checked."""
    good = write(tmp_path, "good.yaml", SEED)
    bad = write(tmp_path, "bad.yaml", SEED.replace("needs: [B]", "needs: [X]"))
    missing = tmp_path / "missing.yaml"
    results = check_files([bad, good, missing])
    assert [r.path for r in results] == [bad, good, missing]
    assert [r.ok for r in results] == [False, True, False]
    # the unknown need, and D's prompt reading A and B, which are no longer upstream
    assert len(results[0].problems) == 3
    assert results[1].checked is not None
    assert results[2].error is not None
    assert "missing.yaml" in str(results[2].error)


def test_problem_points_at_the_template_line(tmp_path: Path) -> None:
    """In a multi-line prompt the problem names the line that reads the agent."""
    text = SEED.replace(
        '    prompt: "Classify {{ agents.A.output }}"\n',
        "    prompt: |\n      Classify this.\n      Input: {{ agents.A.output }}\n"
        "      Also: {{ agents.B.output }}\n",
    )
    path = write(tmp_path, "w.yaml", text)
    ((line, message),) = problems(path)
    assert "uses agents.B" in message
    assert path.read_text().splitlines()[line - 1].strip() == "Also: {{ agents.B.output }}"


def test_shipped_large_workflow_is_the_generators_output() -> None:
    """workflows/large-500.yaml is reproducible from bench/gen_workflow.py and validates."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    module_spec = importlib.util.spec_from_file_location("gen", root / "bench/gen_workflow.py")
    assert module_spec is not None
    assert module_spec.loader is not None
    gen = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(gen)
    shipped = root / "workflows" / "large-500.yaml"
    expected = "\n".join(gen.generate(500, schema="../schemas/workflow.schema.json")) + "\n"
    assert shipped.read_text(encoding="utf-8") == expected
    checked = check_workflow(shipped)
    assert len(checked.graph) == 500
    path = checked.graph.critical_path
    assert path[0] in checked.graph.levels[0]
    assert all(a in checked.spec.agents[b].needs for a, b in itertools.pairwise(path))


def test_a_model_must_name_a_configured_provider(tmp_path: Path) -> None:
    """`nosuch/x` is caught by validate at the agent, naming the providers there are."""
    from aoe.app.validate import check_workflow
    from aoe.errors import SpecError

    path = tmp_path / "w.yaml"
    path.write_text("version: 1\nname: t\nagents:\n  a: {model: nosuch/x, prompt: hi}\n")
    with pytest.raises(SpecError) as info:
        check_workflow(path)
    assert str(info.value).startswith(f"{path}:4:3: agents.a.model: no provider named 'nosuch'")
    (tmp_path / "aoe.yaml").write_text(
        "providers:\n  nosuch: {type: openai, base_url: 'http://127.0.0.1:1/v1'}\n"
    )
    assert check_workflow(path).spec.agents["a"].model.provider == "nosuch"
