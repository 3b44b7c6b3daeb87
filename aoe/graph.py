"""The dependency graph of a workflow: missing needs, cycles, levels, critical path.

Edges run from a dependency to the agent that needs it (``a -> b`` means *b needs a*), so
topological generations are the levels a run goes through and paths read in the order
work flows. Everything is computed in a few linear passes at build time; transitive
``upstream``/``downstream`` sets are Python-int bitsets built on first use, so a graph of
10,000 agents builds and answers in milliseconds, not seconds.

This is the one dependency model: ``validate`` builds it, the scheduler runs it (``needs``,
``dependents``, ``downstream``), resume finds what a changed agent fed with it, and the
report rebuilds it from the needs a run stored (``from_needs``, weighted by how long each
agent really took).

The graph is two dicts of successors and predecessors and Kahn's algorithm for levels,
not networkx: importing networkx costs 0.2 s and 20 MB in every ``aoe run``. A file with
a cycle is the one case that needs more (every distinct cycle, listed readably), and only
then is networkx imported, for ``simple_cycles``.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence

from aoe.errors import Problem, SpecError
from aoe.spec.models import AgentSpec, WorkflowSpec

__all__ = [
    "DEFAULT_LATENCY_S",
    "FALLBACK_LATENCY_S",
    "MAX_CYCLES_REPORTED",
    "WorkflowGraph",
    "default_latency_s",
]

#: Expected seconds per call when an agent sets no ``simulate.latency_s``. Glob patterns are
#: matched against ``provider/model`` (lower case); the first match wins, so the more
#: specific pattern comes first. The figures are rough medians of a short structured answer;
#: they only rank paths for the critical path and never limit a run.
DEFAULT_LATENCY_S: tuple[tuple[str, float], ...] = (
    ("sim/*", 0.5),
    ("*gpt-4o-mini*", 2.0),
    ("*gpt-4.1-nano*", 1.5),
    ("*gpt-4.1-mini*", 2.0),
    ("*gpt-4o*", 4.0),
    ("*gpt-4.1*", 4.0),
    ("*o1*", 15.0),
    ("*o3*", 12.0),
    ("*haiku*", 2.0),
    ("*sonnet*", 5.0),
    ("*opus*", 10.0),
)
#: Expected seconds for a model no pattern of ``DEFAULT_LATENCY_S`` matches.
FALLBACK_LATENCY_S = 3.0
#: A graph can hold exponentially many cycles; list this many and count the rest.
MAX_CYCLES_REPORTED = 20


@functools.lru_cache(maxsize=256)
def default_latency_s(model: str) -> float:
    """The table latency for ``provider/model``: first matching pattern, else the fallback."""
    name = model.lower()
    for pattern, seconds in DEFAULT_LATENCY_S:
        if fnmatch.fnmatchcase(name, pattern):
            return seconds
    return FALLBACK_LATENCY_S


def _expected_latency(agent: AgentSpec) -> float:
    if agent.simulate.latency_s is not None:
        return float(agent.simulate.latency_s)
    return default_latency_s(str(agent.model))


def _problem(agent: AgentSpec, message: str, hint: str | None) -> Problem:
    loc = agent.location
    return Problem(loc.file, loc.line, loc.col, message, hint)


def _needs_problems(spec: WorkflowSpec) -> list[Problem]:
    ids = list(spec.agents)
    problems = []
    for agent in spec.agents.values():
        for need in agent.needs:
            if need == agent.id:
                problems.append(
                    _problem(
                        agent,
                        f"agent '{agent.id}' needs itself",
                        f"remove '{agent.id}' from its needs",
                    )
                )
            elif need not in spec.agents:
                close = difflib.get_close_matches(need, ids, n=1)
                hint = f"did you mean '{close[0]}'?" if close else "needs names agents of this file"
                problems.append(
                    _problem(
                        agent,
                        f"agent '{agent.id}' needs '{need}', which is no agent",
                        hint,
                    )
                )
    return problems


class _Edges:
    """Successors and predecessors of each node, in the order the edges were added."""

    __slots__ = ("pred", "succ")

    def __init__(self, nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> None:
        self.succ: dict[str, dict[str, None]] = {n: {} for n in nodes}
        self.pred: dict[str, dict[str, None]] = {n: {} for n in self.succ}
        for a, b in edges:
            self.succ[a][b] = None
            self.pred[b][a] = None

    def generations(self) -> list[list[str]] | None:
        """Kahn's algorithm by levels: nodes with no predecessor, then those whose
        predecessors are all in earlier levels, and so on; None if there is a cycle."""
        waiting = {n: len(p) for n, p in self.pred.items()}
        level = [n for n, count in waiting.items() if count == 0]
        levels: list[list[str]] = []
        placed = 0
        while level:
            levels.append(level)
            placed += len(level)
            following: list[str] = []
            for node in level:
                for nxt in self.succ[node]:
                    waiting[nxt] -= 1
                    if waiting[nxt] == 0:
                        following.append(nxt)
            level = following
        return levels if placed == len(self.succ) else None


def _dependency_graph(spec: WorkflowSpec) -> _Edges:
    """Agents as nodes in file order; an edge ``need -> agent`` for every valid need."""
    return _Edges(
        spec.agents,
        (
            (need, agent.id)
            for agent in spec.agents.values()
            for need in agent.needs
            if need != agent.id and need in spec.agents
        ),
    )


def _cycle_problems(spec: WorkflowSpec, edges: _Edges) -> list[Problem]:
    import networkx as nx

    graph: nx.DiGraph = nx.DiGraph()  # type: ignore[type-arg]
    graph.add_nodes_from(edges.succ)
    graph.add_edges_from((a, b) for a, succ in edges.succ.items() for b in succ)
    order = {agent_id: i for i, agent_id in enumerate(spec.agents)}
    cycles: Iterator[list[str]] = nx.simple_cycles(graph)
    found = list(itertools.islice(cycles, MAX_CYCLES_REPORTED + 1))
    more = len(found) > MAX_CYCLES_REPORTED
    found = found[:MAX_CYCLES_REPORTED]
    rotated = []
    for cycle in found:
        start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        rotated.append(cycle[start:] + cycle[:start])
    rotated.sort(key=lambda c: [order[n] for n in c])
    problems = []
    for cycle in rotated:
        path = " -> ".join([*cycle, cycle[0]])
        problems.append(
            _problem(
                spec.agents[cycle[0]],
                f"dependency cycle: {path}",
                "a -> b means b needs a; remove one of these needs so the agents can run",
            )
        )
    if more:
        first = spec.agents[rotated[0][0]]
        problems.append(
            _problem(
                first,
                f"more than {MAX_CYCLES_REPORTED} dependency cycles; only the first are listed",
                "fix the listed cycles and validate again",
            )
        )
    return problems


class WorkflowGraph:
    """The validated DAG of one workflow, with its levels and critical path."""

    __slots__ = (
        "_ancestor_bits",
        "_dependents",
        "_descendant_bits",
        "_edges",
        "_index",
        "_latency",
        "_level",
        "_order",
        "critical_path",
        "critical_path_s",
        "levels",
        "needs",
        "spec",
    )

    def __init__(
        self,
        declared: Mapping[str, Sequence[str]],
        graph: _Edges,
        latency_s: Mapping[str, float],
        generations: list[list[str]],
        spec: WorkflowSpec | None = None,
    ) -> None:
        """Use ``build`` or ``from_needs``; this assumes ``graph`` is a DAG over the agents
        and ``generations`` its levels.

        ``declared`` lists every agent (in file order) with its needs as written.
        """
        self.spec = spec
        self._edges = graph
        self._order: tuple[str, ...] = tuple(declared)
        self._index: dict[str, int] = {a: i for i, a in enumerate(self._order)}
        self._latency: dict[str, float] = {a: float(latency_s.get(a, 0.0)) for a in self._order}
        by_index = self._index.__getitem__
        pred, succ = graph.pred, graph.succ
        #: Each agent's needs that are edges of the graph, as written, once each.
        self.needs: Mapping[str, tuple[str, ...]] = {
            a: tuple(n for n in dict.fromkeys(declared[a]) if n in pred[a]) for a in self._order
        }
        self._dependents: dict[str, tuple[str, ...]] = {
            a: tuple(sorted(succ[a], key=by_index)) for a in self._order
        }
        self.levels: tuple[tuple[str, ...], ...] = tuple(
            tuple(sorted(gen, key=by_index)) for gen in generations
        )
        self._level: dict[str, int] = {a: i for i, lv in enumerate(self.levels) for a in lv}
        self.critical_path, self.critical_path_s = self._longest_path()
        self._ancestor_bits: list[int] | None = None
        self._descendant_bits: list[int] | None = None

    @classmethod
    def from_needs(
        cls, needs: Mapping[str, Sequence[str]], latency_s: Mapping[str, float]
    ) -> WorkflowGraph:
        """The graph of stored needs (a run in the ledger), weighted by ``latency_s``.

        Agents are ordered as ``needs`` lists them, then any only ``latency_s`` names;
        needs that name no agent are left out. Raises ``ValueError`` on a cycle.
        """
        declared = {a: tuple(needs.get(a, ())) for a in dict.fromkeys([*needs, *latency_s])}
        graph = _Edges(
            declared,
            (
                (need, agent)
                for agent, deps in declared.items()
                for need in deps
                if need in declared and need != agent
            ),
        )
        generations = graph.generations()
        if generations is None:
            raise ValueError("the stored needs have a cycle")
        return cls(declared, graph, latency_s, generations)

    @classmethod
    def build(cls, spec: WorkflowSpec) -> WorkflowGraph:
        """Build the graph, or raise ``SpecError`` listing every graph problem of ``spec``."""
        graph, problems = cls.analyse(spec)
        if problems or graph is None:
            raise SpecError(problems)
        return graph

    @classmethod
    def analyse(cls, spec: WorkflowSpec) -> tuple[WorkflowGraph | None, tuple[Problem, ...]]:
        """Every graph problem, and the graph whenever there is no cycle.

        Unknown and self needs are left out of that graph, so a validator can go on to
        check templates against it and report everything wrong in one pass.
        """
        problems = _needs_problems(spec)
        graph = _dependency_graph(spec)
        generations = graph.generations()
        if generations is None:  # there is a cycle: find and report each one
            problems.extend(_cycle_problems(spec, graph))
            return None, tuple(problems)
        latency = {a.id: _expected_latency(a) for a in spec.agents.values()}
        declared = {a.id: a.needs for a in spec.agents.values()}
        return cls(declared, graph, latency, generations, spec), tuple(problems)

    def _longest_path(self) -> tuple[tuple[str, ...], float]:
        """One pass in level order; ties go to the earlier agent in the file."""
        finish: dict[str, float] = {}
        via: dict[str, str | None] = {}
        pred = self._edges.pred
        for level in self.levels:
            for node in level:
                best: str | None = None
                best_s = 0.0
                for p in sorted(pred[node], key=self._index.__getitem__):
                    if best is None or finish[p] > best_s:
                        best, best_s = p, finish[p]
                finish[node] = best_s + self._latency[node]
                via[node] = best
        if not finish:
            return (), 0.0
        end = max(self._order, key=lambda n: (finish[n], -self._index[n]))
        path = [end]
        while (prev := via[path[-1]]) is not None:
            path.append(prev)
        return tuple(reversed(path)), finish[end]

    def _bits(self, *, up: bool) -> list[int]:
        """Transitive closure as one int bitset per agent (bit i = i-th agent in the file)."""
        cached = self._ancestor_bits if up else self._descendant_bits
        if cached is not None:
            return cached
        adjacency = self._edges.pred if up else self._edges.succ
        bits = [0] * len(self._order)
        levels = self.levels if up else tuple(reversed(self.levels))
        for level in levels:
            for node in level:
                acc = 0
                for other in adjacency[node]:
                    j = self._index[other]
                    acc |= bits[j] | (1 << j)
                bits[self._index[node]] = acc
        if up:
            self._ancestor_bits = bits
        else:
            self._descendant_bits = bits
        return bits

    def _names(self, bits: int) -> tuple[str, ...]:
        """The agents of a bitset, in file order (lowest bit first)."""
        names = []
        while bits:
            low = bits & -bits
            names.append(self._order[low.bit_length() - 1])
            bits ^= low
        return tuple(names)

    def __len__(self) -> int:
        return len(self._order)

    @property
    def agent_ids(self) -> tuple[str, ...]:
        """Agent ids in file order."""
        return self._order

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """``(need, agent)`` pairs, grouped by agent in file order, needs in file order."""
        return tuple((need, agent) for agent in self._order for need in self.needs[agent])

    @property
    def latencies(self) -> Mapping[str, float]:
        """Expected seconds per agent (see ``expected_latency_s``)."""
        return dict(self._latency)

    def level_of(self, agent_id: str) -> int:
        """The 0-based level an agent runs in."""
        return self._level[agent_id]

    def expected_latency_s(self, agent_id: str) -> float:
        """``simulate.latency_s`` if set, else the model's entry of ``DEFAULT_LATENCY_S``."""
        return self._latency[agent_id]

    def is_upstream(self, candidate: str, agent_id: str) -> bool:
        """True when ``agent_id`` needs ``candidate``, directly or transitively."""
        if candidate not in self._index:
            return False
        return bool(self._bits(up=True)[self._index[agent_id]] >> self._index[candidate] & 1)

    def upstream(self, agent_id: str) -> tuple[str, ...]:
        """Every agent that must finish before ``agent_id`` starts (transitive needs), in
        file order."""
        return self._names(self._bits(up=True)[self._index[agent_id]])

    def downstream(self, agent_id: str) -> tuple[str, ...]:
        """Every agent that waits, directly or transitively, for ``agent_id``, in file order."""
        return self._names(self._bits(up=False)[self._index[agent_id]])

    def dependents(self, agent_id: str) -> tuple[str, ...]:
        """The agents that list ``agent_id`` in their own needs, in file order."""
        return self._dependents[agent_id]
