"""The dependency graph: levels, critical path, and graph errors a user must fix."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoe.errors import SpecError
from aoe.graph import (
    DEFAULT_LATENCY_S,
    FALLBACK_LATENCY_S,
    MAX_CYCLES_REPORTED,
    WorkflowGraph,
    default_latency_s,
)
from aoe.spec.models import AgentSpec, Location, ModelRef, SimulateSpec, WorkflowSpec


def agent(
    agent_id: str,
    *needs: str,
    latency_s: float | None = None,
    model: str = "openai/gpt-4o-mini",
    line: int = 1,
) -> AgentSpec:
    return AgentSpec(
        id=agent_id,
        model=ModelRef.parse(model),
        prompt="do it",
        location=Location("w.yaml", line, 3),
        needs=needs,
        simulate=SimulateSpec(latency_s=latency_s),
    )


def workflow(*agents: AgentSpec) -> WorkflowSpec:
    return WorkflowSpec(name="w", path=Path("w.yaml"), agents={a.id: a for a in agents})


def seed() -> WorkflowSpec:
    """The seed example: A; B and C need A; D needs B; E needs C and D."""
    return workflow(
        agent("A", latency_s=1.0),
        agent("B", "A", latency_s=2.0),
        agent("C", "A", latency_s=1.5),
        agent("D", "B", latency_s=3.0),
        agent("E", "C", "D", latency_s=0.5),
    )


def problems_of(spec: WorkflowSpec) -> list[str]:
    with pytest.raises(SpecError) as info:
        WorkflowGraph.build(spec)
    return [p.message for p in info.value.problems]


def test_seed_levels_are_topological_generations() -> None:
    """The seed workflow runs in levels [A] [B, C] [D] [E]."""
    graph = WorkflowGraph.build(seed())
    assert graph.levels == (("A",), ("B", "C"), ("D",), ("E",))


def test_seed_critical_path_and_weighted_length() -> None:
    """The critical path is A -> B -> D -> E and its length is the sum of latencies."""
    graph = WorkflowGraph.build(seed())
    assert graph.critical_path == ("A", "B", "D", "E")
    assert graph.critical_path_s == pytest.approx(1.0 + 2.0 + 3.0 + 0.5)


def test_critical_path_follows_weights_not_hop_count() -> None:
    """A short chain of slow agents beats a long chain of fast ones."""
    spec = workflow(
        agent("A", latency_s=1.0),
        agent("B", "A", latency_s=0.1),
        agent("D", "B", latency_s=0.1),
        agent("C", "A", latency_s=5.0),
        agent("E", "C", "D", latency_s=1.0),
    )
    graph = WorkflowGraph.build(spec)
    assert graph.critical_path == ("A", "C", "E")
    assert graph.critical_path_s == pytest.approx(7.0)


def test_level_order_follows_the_file_not_the_alphabet() -> None:
    """Agents inside a level are listed in the order the file declares them."""
    graph = WorkflowGraph.build(workflow(agent("zeta"), agent("alpha"), agent("mid", "zeta")))
    assert graph.levels == (("zeta", "alpha"), ("mid",))


def test_expected_latency_uses_model_defaults_without_simulate() -> None:
    """Without simulate.latency_s an agent weighs what its model typically takes."""
    spec = workflow(
        agent("mini", model="openai/gpt-4o-mini"),
        agent("big", "mini", model="openai/gpt-4o"),
        agent("opus", "big", model="anthropic/claude-opus-4"),
        agent("sim", "opus", model="sim/fast"),
        agent("other", "sim", model="local/llama3"),
    )
    graph = WorkflowGraph.build(spec)
    assert [graph.expected_latency_s(a) for a in graph.agent_ids] == [
        2.0,
        4.0,
        10.0,
        0.5,
        FALLBACK_LATENCY_S,
    ]
    assert graph.critical_path_s == pytest.approx(2 + 4 + 10 + 0.5 + FALLBACK_LATENCY_S)


def test_latency_table_puts_specific_patterns_first() -> None:
    """gpt-4o-mini is not mistaken for gpt-4o: the first matching pattern wins."""
    assert default_latency_s("openai/gpt-4o-mini") < default_latency_s("openai/gpt-4o")
    assert default_latency_s("anthropic/claude-3-5-haiku-latest") == 2.0
    assert default_latency_s("anthropic/claude-sonnet-4-5") == 5.0
    assert all(seconds > 0 for _, seconds in DEFAULT_LATENCY_S)


def test_upstream_downstream_and_dependents() -> None:
    """upstream is the transitive needs, downstream the transitive dependents."""
    graph = WorkflowGraph.build(seed())
    assert graph.upstream("E") == ("A", "B", "C", "D")
    assert graph.upstream("D") == ("A", "B")
    assert graph.upstream("A") == ()
    assert graph.downstream("B") == ("D", "E")
    assert graph.dependents("A") == ("B", "C")
    assert graph.is_upstream("A", "E")
    assert not graph.is_upstream("C", "D")
    assert not graph.is_upstream("E", "A")
    assert not graph.is_upstream("nope", "A")


def test_missing_need_is_reported_with_suggestion_at_the_agent() -> None:
    """A typo in needs names the agent, the bad id and the closest real id."""
    spec = workflow(agent("extract", line=3), agent("check", "extrcat", line=9))
    with pytest.raises(SpecError) as info:
        WorkflowGraph.build(spec)
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == ("w.yaml", 9)
    assert problem.message == "agent 'check' needs 'extrcat', which is no agent"
    assert problem.hint == "did you mean 'extract'?"


def test_every_missing_need_is_reported() -> None:
    """All unknown needs are listed, not only the first."""
    spec = workflow(agent("a", "x", "y"), agent("b", "z"))
    messages = problems_of(spec)
    assert len(messages) == 3
    assert all("which is no agent" in m for m in messages)


def test_self_dependency_is_an_error() -> None:
    """An agent that needs itself is reported as such, not as a cycle."""
    messages = problems_of(workflow(agent("a"), agent("b", "b")))
    assert messages == ["agent 'b' needs itself"]


def test_cycle_is_reported_as_its_path() -> None:
    """A cycle reads a -> b -> c -> a (b needs a, c needs b, a needs c)."""
    spec = workflow(agent("a", "c"), agent("b", "a"), agent("c", "b"), agent("d"))
    assert problems_of(spec) == ["dependency cycle: a -> b -> c -> a"]


def test_each_distinct_cycle_is_reported_once() -> None:
    """Two separate cycles give two problems, each once, starting at its first agent."""
    spec = workflow(
        agent("a", "b"),
        agent("b", "a"),
        agent("x", "z"),
        agent("y", "x"),
        agent("z", "y"),
    )
    assert problems_of(spec) == [
        "dependency cycle: a -> b -> a",
        "dependency cycle: x -> y -> z -> x",
    ]


def test_missing_needs_and_cycles_are_reported_together() -> None:
    """One build lists unknown needs, self needs and cycles in a single error."""
    spec = workflow(agent("a", "b", "ghost"), agent("b", "a"), agent("c", "c"))
    messages = problems_of(spec)
    assert len(messages) == 3
    assert any("'ghost'" in m for m in messages)
    assert "agent 'c' needs itself" in messages
    assert "dependency cycle: a -> b -> a" in messages


def test_a_dense_cyclic_graph_lists_a_bounded_number_of_cycles() -> None:
    """A graph with thousands of cycles reports a readable number and says there are more."""
    ids = [f"n{i}" for i in range(8)]
    spec = workflow(*(agent(i, *(j for j in ids if j != i)) for i in ids))
    messages = problems_of(spec)
    assert len(messages) == MAX_CYCLES_REPORTED + 1
    assert messages[-1].startswith(f"more than {MAX_CYCLES_REPORTED} dependency cycles")


def test_analyse_returns_a_graph_despite_missing_needs() -> None:
    """With unknown needs but no cycle, the rest of the graph can still be checked."""
    graph, problems = WorkflowGraph.analyse(workflow(agent("a"), agent("b", "a", "ghost")))
    assert len(problems) == 1
    assert graph is not None
    assert graph.upstream("b") == ("a",)


def test_ten_thousand_agents_build_fast() -> None:
    """Building and querying a 10,000-agent graph stays linear-time fast (bench/ has figures)."""
    width = 100
    agents = []
    for i in range(10_000):
        level = i // width
        needs = () if level == 0 else (f"a{i - width}", f"a{(level - 1) * width + (i * 7) % width}")
        agents.append(agent(f"a{i}", *dict.fromkeys(needs), latency_s=(i % 13) / 10))
    spec = workflow(*agents)
    start = time.perf_counter()
    graph = WorkflowGraph.build(spec)
    hits = sum(graph.is_upstream(f"a{i - 300}", f"a{i}") for i in range(300, 10_000))
    elapsed = time.perf_counter() - start
    assert len(graph.levels) == 100
    assert len(graph.critical_path) == 100
    assert hits > 0
    assert elapsed < 3.0  # ~0.1 s here; a generous bound that still catches quadratic work


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=30), max_size=4), min_size=1, max_size=30),
    st.booleans(),
)
def test_levels_and_cycles_agree_with_networkx(needs: list[list[int]], backwards: bool) -> None:
    """Levels are networkx's topological generations (in file order), and a graph is
    refused as cyclic exactly when networkx finds a cycle in it."""
    import networkx as nx

    count = len(needs)
    agents = [
        agent(f"a{i}", *dict.fromkeys(f"a{j % count}" for j in picks if backwards or j % count < i))
        for i, picks in enumerate(needs)
    ]
    spec = workflow(*agents)
    reference: nx.DiGraph = nx.DiGraph()  # type: ignore[type-arg]
    reference.add_nodes_from(spec.agents)
    reference.add_edges_from((n, a.id) for a in agents for n in a.needs if n != a.id)
    graph, _ = WorkflowGraph.analyse(spec)
    if not nx.is_directed_acyclic_graph(reference):
        assert graph is None
        return
    assert graph is not None
    order = list(spec.agents)
    expected = tuple(
        tuple(sorted(level, key=order.index)) for level in nx.topological_generations(reference)
    )
    assert graph.levels == expected


def test_validating_a_file_without_cycles_never_imports_networkx() -> None:
    """`aoe run` and `aoe validate` leave networkx (0.2 s, 20 MB) unloaded."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tests.test_graph import seed\n"
        "from aoe.graph import WorkflowGraph\n"
        "WorkflowGraph.build(seed()).downstream('A')\n"
        "print('networkx' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "False"
