"""Workflow files to typed, immutable ``WorkflowSpec`` objects, with every problem found.

Steps: parse (positions kept), check the version, validate against the workflow schema,
take ``tools:`` entries that say ``uses:`` from their tools file, resolve agents' ``uses:``,
merge ``defaults`` < used agent file < agent entry (``retry`` and ``simulate`` key by
key), check ``output_schema`` and tool parameters are JSON Schemas,
check template syntax and the inputs / env / with names templates read, then build
the frozen dataclasses of ``aoe.spec.models`` from the keys the file writes (their
field defaults are aoe's defaults, so no default is written here). A file with problems
raises one ``SpecError`` listing all of them, in file order; checks that need the agent graph
(missing ``needs`` targets, cycles, templates naming non-upstream agents) live in
``aoe.app.validate``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aoe.errors import Problem, SpecError
from aoe.spec.agents import FILE_ONLY_KEYS, Layer, UsesResolver, check_with
from aoe.spec.models import (
    EMPTY,
    AgentSpec,
    Convert,
    InputSpec,
    Location,
    ModelRef,
    RetrySpec,
    SimulatedToolCall,
    SimulateSpec,
    ToolKind,
    ToolSpec,
    WorkflowSpec,
    as_written,
    freeze,
    given,
)
from aoe.spec.schema import check_json_schema, describe, dotted, suggest, type_matches, validate
from aoe.spec.templates import KINDS, TemplateRefs, TemplateSyntax, references
from aoe.spec.toolfiles import ToolsFileResolver
from aoe.spec.yamlload import PathKey, YamlDocument, paused_gc, read_yaml

__all__ = ["load_workflow"]

_MERGED_BY_KEY = ("retry", "simulate")
_TOOL_KINDS: tuple[ToolKind, ...] = ("python", "http", "command", "mcp")
_TEMPLATE_HINT = (
    "templates may read inputs.<name>, agents.<id>.output, env.<VAR> (if listed under env:) "
    "and with.<param> (parameters of a uses: file)"
)


def load_workflow(path: str | Path) -> WorkflowSpec:
    """Load, check and type one workflow file.

    Raises ``UsageError`` if the file cannot be read, ``SpecError`` listing every
    problem if it is not a valid workflow.
    """
    file = Path(path)
    with paused_gc():
        return _WorkflowLoader(file, read_yaml(file)).load()


class _WorkflowLoader:
    def __init__(self, path: Path, doc: YamlDocument) -> None:
        self.path = path
        self.doc = doc
        self.file = doc.file
        self.problems: set[Problem] = set(doc.problems)
        self.uses = UsesResolver()
        self.tool_files = ToolsFileResolver()
        self._frozen: dict[int, Any] = {}
        self._retry: dict[tuple[Any, ...], RetrySpec] = {}
        self._simulates: dict[tuple[Any, ...], SimulateSpec] = {}
        self._simulate_settings: dict[str, Convert] = {**_SIMULATE_SETTINGS, "output": self._freeze}
        self._models: dict[str, ModelRef] = {}

    def problem(
        self,
        doc: YamlDocument,
        path: PathKey,
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
    ) -> None:
        line, col = doc.positions.key(path) if key else doc.positions.value(path)
        self.problems.add(Problem(doc.file, line, col, message, hint))

    def fail(self) -> SpecError:
        main = self.file

        def order(p: Problem) -> tuple[bool, str, int, int, str]:
            return (p.file != main, p.file, p.line, p.col, p.message)

        return SpecError(sorted(self.problems, key=order))

    def load(self) -> WorkflowSpec:
        data = self.doc.data
        if not isinstance(data, dict):
            self.problem(
                self.doc,
                (),
                "a workflow file must be a mapping of keys (version, "
                f"agents, ...), but this file holds {describe(data)}",
                "start the file with 'version: 1' and 'agents:'",
            )
            raise self.fail()
        version = data.get("version")
        if "version" in data and (isinstance(version, bool) or version != 1):
            self.problem(
                self.doc,
                ("version",),
                f"version: {version!r} is not supported; this aoe reads version 1",
                "set 'version: 1'",
            )
            raise self.fail()
        self.problems.update(validate(data, "workflow", self.file, self.doc.positions))
        inputs = self._inputs(data.get("inputs"))
        env = tuple(e for e in data.get("env") or () if isinstance(e, str))
        raw_budgets = data.get("budgets")
        named = [
            (name, Location(self.file, *self.doc.positions.key(("budgets", i))))
            for i, name in enumerate(raw_budgets if isinstance(raw_budgets, list) else ())
            if isinstance(name, str)
        ]
        tools = self._tools(data.get("tools"))
        raw_tools = data.get("tools")
        # An agent naming a declared tool whose entry is broken is not a second problem.
        declared = frozenset(raw_tools) if isinstance(raw_tools, dict) else frozenset()
        defaults = data.get("defaults")
        defaults_layer = (
            Layer(defaults, self.doc, ("defaults",)) if isinstance(defaults, dict) else None
        )
        agents: dict[str, AgentSpec] = {}
        entries = data.get("agents")
        for agent_id, entry in entries.items() if isinstance(entries, dict) else ():
            if isinstance(entry, dict):
                spec = self._agent(
                    str(agent_id),
                    entry,
                    defaults=defaults_layer,
                    inputs=inputs,
                    env=env,
                    tools=declared,
                )
                if spec is not None:
                    agents[agent_id] = spec
        self.problems.update(self.uses.problems)
        if self.problems:
            raise self.fail()
        return WorkflowSpec(
            name=str(data.get("name") or self.path.stem),
            path=self.path,
            agents=_readonly(agents),
            inputs=_readonly(inputs),
            tools=_readonly(tools),
            env=env,
            budgets=tuple(name for name, _ in named),
            budget_locations=tuple(at for _, at in named),
            **given(data, _WORKFLOW_SETTINGS),
        )

    # -- inputs and tools --------------------------------------------------------------

    def _inputs(self, raw: Any) -> dict[str, InputSpec]:
        inputs: dict[str, InputSpec] = {}
        if not isinstance(raw, dict):
            return inputs
        for name, spec in raw.items():
            if not isinstance(spec, dict):
                continue
            line, col = self.doc.positions.key(("inputs", name))
            declared = inputs[name] = InputSpec(
                name=name,
                required=bool(spec.get("required", "default" not in spec)),
                location=Location(self.file, line, col),
                **given(spec, _INPUT_SETTINGS),
            )
            default, type_name = spec.get("default"), declared.type
            if (
                default is not None
                and isinstance(type_name, str)
                and (type_name in _JSON_TYPES and not type_matches(default, type_name))
            ):
                self.problem(
                    self.doc,
                    ("inputs", name, "default"),
                    f"inputs.{name}.default: expected {type_name}, got {describe(default)}",
                )
        return inputs

    def _tools(self, raw: Any) -> dict[str, ToolSpec]:
        """The ``tools:`` entries; ``{uses: FILE}`` takes the definition from a tools file,
        whose own document then gives the tool's location (and so its directory)."""
        tools: dict[str, ToolSpec] = {}
        if not isinstance(raw, dict):
            return tools
        for name, entry in raw.items():
            if not isinstance(entry, dict):
                continue
            doc: YamlDocument = self.doc
            spec: Mapping[str, Any] = entry
            if "uses" in entry:
                uses = entry["uses"]
                if not isinstance(uses, str) or len(entry) != 1:
                    continue  # the schema already reported it
                found = self.tool_files.resolve(
                    uses, str(name), self.doc, self.path, ("tools", name)
                )
                if found is None:
                    continue
                doc, spec = found
            tool = self._tool(str(name), spec, doc)
            if tool is not None:
                tools[name] = tool
        self.problems.update(self.tool_files.problems)
        return tools

    def _tool(self, name: str, spec: Mapping[str, Any], doc: YamlDocument) -> ToolSpec | None:
        """One definition at ``tools.<name>`` of ``doc`` (the workflow or a tools file)."""
        kinds: list[ToolKind] = [k for k in _TOOL_KINDS if k in spec]
        if len(kinds) != 1:
            return None  # the schema's oneOf already reported it
        kind = kinds[0]
        parameters = spec.get("parameters")
        if isinstance(parameters, dict):
            self.problems.update(
                check_json_schema(
                    parameters, doc.file, doc.positions, ("tools", name, "parameters")
                )
            )
        value = spec[kind]
        target = (
            value
            if isinstance(value, dict)
            else ({"argv": value} if kind == "command" else {"function": value})
        )
        line, col = doc.positions.key(("tools", name))
        return ToolSpec(
            name=name,
            description=str(spec.get("description", "")),
            kind=kind,
            target=freeze(target),
            location=Location(doc.file, line, col),
            **given(spec, _TOOL_SETTINGS),
        )

    # -- agents ------------------------------------------------------------------------

    def _agent(
        self,
        agent_id: str,
        entry: dict[str, Any],
        *,
        defaults: Layer | None,
        inputs: Mapping[str, InputSpec],
        env: tuple[str, ...],
        tools: Collection[str],
    ) -> AgentSpec | None:
        at: PathKey = ("agents", agent_id)
        layers: list[Layer] = [defaults] if defaults is not None else []
        with_values: dict[str, Any] = {}
        uses = entry.get("uses")
        used = None
        if isinstance(uses, str):
            used = self.uses.resolve(uses, self.doc, self.path, at)
            if used is None:
                return None
            layers.extend(used.layers)
            with_values.update(used.with_values)
            with_values.update(check_with(entry.get("with"), used, self.doc, at, self.problems))
        elif "with" in entry:
            self.problem(
                self.doc,
                (*at, "with"),
                f"{dotted(at)}: with: only applies to an agent that uses: an agent file",
                "add uses: <agent file>, or put the values into the prompt",
                key=True,
            )
        layers.append(Layer(entry, self.doc, at))
        merged, origin = _merge(layers)

        prompt = merged.get("prompt")
        model = merged.get("model")
        if not isinstance(prompt, str):
            self.problem(
                self.doc,
                at,
                f"{dotted(at)}: has no prompt",
                "add prompt: (a Jinja2 template), or uses: an agent file that has one",
                key=True,
            )
        if not isinstance(model, str):
            self.problem(
                self.doc,
                at,
                f"{dotted(at)}: has no model",
                "set model: provider/name on the agent or under defaults:",
                key=True,
            )
        for key in ("prompt", "system"):
            source = merged.get(key)
            if isinstance(source, str):
                self._template(
                    source,
                    origin[key],
                    key,
                    with_names=(with_values, used.parameters if used else {}),
                    has_uses=used is not None,
                    inputs=inputs,
                    env=env,
                )
        schema = merged.get("output_schema")
        if isinstance(schema, dict):
            layer = origin["output_schema"]
            self.problems.update(
                check_json_schema(
                    schema, layer.doc.file, layer.doc.positions, (*layer.base, "output_schema")
                )
            )
        names = merged.get("tools") or ()
        if isinstance(names, list):
            layer = origin["tools"]
            for index, name in enumerate(names):
                if isinstance(name, str) and name not in tools:
                    self.problem(
                        layer.doc,
                        (*layer.base, "tools", index),
                        f"{dotted((*layer.base, 'tools', index))}: no tool named "
                        f"'{name}' under tools:",
                        suggest(name, tools),
                    )
        if self.problems or not isinstance(prompt, str) or not isinstance(model, str):
            return None  # the file will be rejected; do not build what cannot be right
        return self._build(
            agent_id,
            entry,
            merged,
            origin=origin,
            with_values=with_values,
            prompt=prompt,
            model=model,
        )

    def _template(
        self,
        source: str,
        layer: Layer,
        key: str,
        *,
        with_names: tuple[Mapping[str, Any], ...],
        has_uses: bool,
        inputs: Mapping[str, InputSpec],
        env: tuple[str, ...],
    ) -> None:
        """Check a template's syntax and the inputs, env and with names it reads.

        This runs once per agent, so the common case (nothing wrong) returns early.
        """
        path = (*layer.base, key)
        try:
            refs = references(source)
        except TemplateSyntax as exc:
            line, col = layer.doc.positions.text_line(path, exc.line)
            self.problems.add(
                Problem(
                    layer.doc.file,
                    line,
                    col,
                    f"{dotted(path)}: template syntax error: {exc.message}",
                    "Jinja2 syntax: {{ name }} prints a value; {% if x %}...{% endif %} is a block",
                )
            )
            return
        bad_inputs = refs.inputs.difference(inputs) if refs.inputs else ()
        bad_env = refs.env.difference(env) if refs.env else ()
        names: set[str] = set()
        if refs.with_keys:
            for mapping in with_names:
                names.update(mapping)
        bad_with = refs.with_keys.difference(names) if refs.with_keys else ()
        if bad_inputs or bad_env or bad_with or refs.unknown:
            self._reference_problems(
                refs,
                layer=layer,
                path=path,
                bad=(bad_inputs, bad_env, bad_with),
                with_names=names,
                has_uses=has_uses,
                inputs=inputs,
            )

    def _reference_problems(
        self,
        refs: TemplateRefs,
        *,
        layer: Layer,
        path: PathKey,
        bad: tuple[Collection[str], Collection[str], Collection[str]],
        with_names: Collection[str],
        has_uses: bool,
        inputs: Mapping[str, InputSpec],
    ) -> None:
        where = dotted(path)
        bad_inputs, bad_env, bad_with = bad

        def report(kind: str, name: str, message: str, hint: str | None) -> None:
            line, col = layer.doc.positions.text_line(path, refs.line(kind, name))
            self.problems.add(Problem(layer.doc.file, line, col, f"{where}: {message}", hint))

        for name in sorted(bad_inputs):
            report(
                "inputs",
                name,
                f"template reads inputs.{name}, but the workflow declares no input '{name}'",
                _close(name, inputs)
                or f"declare it under inputs:, e.g. inputs: {{{name}: {{type: string}}}}",
            )
        for name in sorted(bad_env):
            report(
                "env",
                name,
                f"template reads env.{name}, but '{name}' is not listed under env:",
                "add it to the top-level env: list; templates see only the variables listed there",
            )
        reason = (
            "its agent file declares no such parameter"
            if has_uses
            else ("this agent uses no agent file")
        )
        for name in sorted(bad_with):
            report(
                "with", name, f"template reads with.{name}, but {reason}", _close(name, with_names)
            )
        for name in sorted(refs.unknown):
            hint = suggest(name, KINDS)
            report(
                "unknown",
                name,
                f"template names '{name}', which is not defined",
                hint if hint and hint.startswith("did") else _TEMPLATE_HINT,
            )

    def _build(
        self,
        agent_id: str,
        entry: Mapping[str, Any],
        merged: Mapping[str, Any],
        *,
        origin: Mapping[str, Layer],
        with_values: Mapping[str, Any],
        prompt: str,
        model: str,
    ) -> AgentSpec:
        at: PathKey = ("agents", agent_id)
        line, col = self.doc.positions.key(at)
        prompt_layer = origin["prompt"]
        p_line, p_col = prompt_layer.doc.positions.text_start((*prompt_layer.base, "prompt"))
        schema = merged.get("output_schema")
        return AgentSpec(
            id=agent_id,
            model=self._model(model),
            prompt=prompt,
            location=Location(self.file, line, col),
            needs=tuple(entry.get("needs") or ()),
            retry=self._retry_spec(merged.get("retry")),
            output_schema=self._freeze(schema) if schema is not None else None,
            with_values=freeze(with_values) if with_values else EMPTY,
            simulate=self._simulate_spec(merged.get("simulate")),
            uses=entry.get("uses"),
            prompt_location=Location(prompt_layer.doc.file, p_line, p_col),
            **given(merged, _AGENT_SETTINGS),
        )

    def _freeze(self, value: Any) -> Any:
        """``freeze`` once per object: agents sharing one schema share its frozen copy."""
        found = self._frozen.get(id(value))
        if found is None:
            found = self._frozen[id(value)] = (value, freeze(value))
        return found[1]

    def _model(self, text: str) -> ModelRef:
        found = self._models.get(text)
        if found is None:
            found = self._models[text] = ModelRef.parse(text)
        return found

    def _simulate_spec(self, raw: Any) -> SimulateSpec:
        """Agents with the same simple simulate block (or none: ``SimulateSpec()``) share
        one immutable spec."""
        raw = raw or {}
        if "output" in raw or "tool_calls" in raw:
            return SimulateSpec(**given(raw, self._simulate_settings))
        key = tuple(sorted(raw.items()))
        spec = self._simulates.get(key)
        if spec is None:
            spec = self._simulates[key] = SimulateSpec(**given(raw, self._simulate_settings))
        return spec

    def _retry_spec(self, raw: Any) -> RetrySpec:
        """Agents with the same retry block (or none: ``RetrySpec()``) share one spec."""
        key = tuple(sorted(raw.items())) if raw else ()
        spec = self._retry.get(key)
        if spec is None:
            spec = self._retry[key] = RetrySpec(**given(raw or {}, _RETRY_SETTINGS))
        return spec


def _whole(value: Any) -> Any:
    """JSON Schema's ``integer`` accepts ``2.0``; specs hold it as the int it means."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _tool_calls(raw: Any) -> tuple[SimulatedToolCall, ...]:
    """``simulate.tool_calls``, each call built from the keys it writes."""
    return tuple(SimulatedToolCall(name=c["name"], **given(c, _TOOL_CALL_SETTINGS)) for c in raw)


# The keys each spec takes from a file when written, and how a written value becomes the
# spec's; a key left out gets the spec's field default (aoe.spec.models).
def _usd(value: float | int) -> Decimal:
    """Money as written in the YAML, exactly (a float reads as its shortest text)."""
    return Decimal(str(value))


_WORKFLOW_SETTINGS: Mapping[str, Convert] = {
    "description": as_written,
    "max_parallel_agents": _whole,
    "allow_partial_completion": bool,
    "max_failure_rate": float,
    "critical_priority": _whole,
    "budget_usd": _usd,
}
_INPUT_SETTINGS: Mapping[str, Convert] = {
    "type": as_written,
    "description": as_written,
    "default": freeze,
}
_TOOL_SETTINGS: Mapping[str, Convert] = {"parameters": freeze, "timeout_s": float}
_AGENT_SETTINGS: Mapping[str, Convert] = {
    "system": as_written,
    "module": as_written,
    "description": as_written,
    "priority": int,
    "temperature": float,
    "max_tokens": int,
    "timeout_s": float,
    "tools": tuple,
    "max_turns": int,
    "max_prompt_chars": int,
    "cost_limit_usd": _usd,
}
_RETRY_SETTINGS: Mapping[str, Convert] = {
    "max_retries": _whole,
    "strategy": as_written,
    "base_delay_s": float,
    "max_delay_s": float,
    "exponential_base": float,
    "jitter": as_written,
}
_SIMULATE_SETTINGS: Mapping[str, Convert] = {
    "latency_s": float,
    "output_tokens": _whole,
    "fail_times": int,
    "fail_with": as_written,
    "tool_calls": _tool_calls,
}
_TOOL_CALL_SETTINGS: Mapping[str, Convert] = {"arguments": freeze, "turn": int}
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array"})


def _merge(layers: list[Layer]) -> tuple[dict[str, Any], dict[str, Layer]]:
    """Later layers win; ``retry`` and ``simulate`` merge key by key."""
    merged: dict[str, Any] = {}
    origin: dict[str, Layer] = {}
    for layer in layers:
        for key, value in layer.data.items():
            if key in FILE_ONLY_KEYS:
                continue
            below = merged.get(key)
            if key in _MERGED_BY_KEY and isinstance(value, dict) and isinstance(below, dict):
                merged[key] = {**below, **value}
            else:
                merged[key] = value
            origin[key] = layer
    return merged, origin


def _close(name: str, options: Iterable[str]) -> str | None:
    """A "did you mean" hint only when some option is close to ``name``."""
    hint = suggest(name, options)
    return hint if hint and hint.startswith("did you mean") else None


def _readonly(items: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a mapping of spec objects (already immutable themselves)."""
    return MappingProxyType(dict(items))
