"""The Jinja2 sandbox templates render in, bounded in what one render may build.

Jinja's ``ImmutableSandboxedEnvironment`` stops attribute tricks and mutation, not size:
``{{ 'a' * 2000000000 }}`` builds 2 GB before anything could look at the result. Here
every render carries a ``RenderBudget`` of ``max_chars`` characters, and:

- an operation whose result size is known from its operands is checked *before* it
  runs: ``*`` (a string or list times a count), ``**`` and ``*`` on integers (digits),
  ``+``, ``%`` and ``format`` widths, the width or count of ``center``, ``ljust``,
  ``rjust``, ``zfill``, ``expandtabs``, ``indent``, ``wordwrap``, ``batch``, ``slice``
  and ``tojson(indent=)``, and what ``join``, ``replace`` and ``sum`` would make;
- every value a call, filter, operator or ``~`` builds is counted after it is made: one
  over ``max_chars``, or all of one render's together over ``ALLOCATION_FACTOR`` times
  ``max_chars``, ends the render;
- text captured by a block (``{% set %}...{% endset %}``, macros, ``{% filter %}``)
  goes into a buffer that counts as it grows, and the output itself is cut off by the
  caller (``aoe.spec.templates.render``) as soon as it passes ``max_chars``;
- ``range`` stays at Jinja's ``MAX_RANGE`` items, and ``lipsum`` (which makes as many
  paragraphs as asked) is not offered.

So what one render holds stays within a small multiple of ``max_chars`` characters,
whatever the template does with whatever data. Time is bounded by the same counts for
everything that builds text; loops that build nothing are not counted.
"""

from __future__ import annotations

import inspect
import json
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "ALLOCATION_FACTOR",
    "MAX_INT_BITS",
    "BoundedSandbox",
    "RenderBudget",
    "TooLarge",
    "bounded",
    "budget",
]

ALLOCATION_FACTOR = 8
"""All values one render builds may add up to this many times its ``max_chars``."""

MAX_INT_BITS = 100_000
"""Largest integer a template may compute (about 30,000 digits): ``2 ** 10 ** 9`` would
take minutes and gigabytes, and no prompt needs a number that large."""


class TooLarge(SecurityError):
    """A render tried to build more than its budget allows."""


@dataclass(slots=True)
class RenderBudget:
    """What one render may build: ``max_chars`` per value and for the output, and
    ``ALLOCATION_FACTOR`` times that in all (``built`` so far).

    ``escape``, when set, encodes the text of every ``{{ ... }}`` (an ``http:`` tool's URL
    encodes each value that way), and ``urlencode`` then leaves its value to it.
    """

    max_chars: int
    escape: Callable[[str], str] | None = None
    built: int = 0

    def need(self, size: int, what: str) -> None:
        """Refuse to build ``what`` if it would be larger than one value may be."""
        if size > self.max_chars:
            raise TooLarge(
                f"{what} would make {size:,} characters; a template may build at most "
                f"{self.max_chars:,}"
            )

    def take(self, size: int, what: str) -> None:
        """Count ``size`` characters just built (``what``) against the render's budget."""
        self.need(size, what)
        self.built += size
        if self.built > self.max_chars * ALLOCATION_FACTOR:
            raise TooLarge(
                f"template built more than {self.max_chars * ALLOCATION_FACTOR:,} characters "
                f"in all ({ALLOCATION_FACTOR} x its limit of {self.max_chars:,})"
            )

    def counted(self, value: Any, what: str = "a value") -> Any:
        """``value``, counted against this render's budget."""
        size = _size(value)
        if size:
            self.take(size, what)
        return value


_CURRENT: ContextVar[RenderBudget | None] = ContextVar("aoe_render_budget", default=None)
_DEFAULT_MAX_CHARS = 1_000_000  # only when rendering outside ``bounded`` (tests, tools)


def budget() -> RenderBudget:
    """The budget of the render under way (a fresh default one outside any)."""
    current = _CURRENT.get()
    return current if current is not None else RenderBudget(_DEFAULT_MAX_CHARS)


@contextmanager
def bounded(limits: RenderBudget) -> Iterator[RenderBudget]:
    """Render within ``limits`` (compiling, constant folding and output included)."""
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)


def _size(value: Any) -> int:
    if isinstance(value, str | bytes | bytearray | list | tuple | dict | set | frozenset):
        return len(value)
    return 0


def _whole(value: Any) -> int | None:
    """``value`` as a count, or None when it is not an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _check_int(value: Any, what: str) -> None:
    count = _whole(value)
    if count is not None and count > 0:
        budget().need(count, what)


def _check_repeat(left: Any, right: Any) -> None:
    """``text * n``, ``list * n`` or ``n * n``: the result's size, before it is made."""
    for seq, times in ((left, right), (right, left)):
        count = _whole(times)
        if count is not None and _size(seq):
            budget().need(_size(seq) * count, "repeating a value")
            return
    a, b = _whole(left), _whole(right)
    if a is not None and b is not None and a.bit_length() + b.bit_length() > MAX_INT_BITS:
        raise TooLarge(f"multiplying these numbers would make more than {MAX_INT_BITS:,} bits")


def _check_power(left: Any, right: Any) -> None:
    base, exponent = _whole(left), _whole(right)
    if base is None or exponent is None or exponent <= 0 or abs(base) <= 1:
        return
    if exponent > MAX_INT_BITS or base.bit_length() * exponent > MAX_INT_BITS:
        raise TooLarge(f"a power this large would have more than {MAX_INT_BITS:,} bits")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _values(args: Any) -> Iterable[Any]:
    if isinstance(args, tuple | list):
        return args
    if isinstance(args, Mapping):
        return args.values()
    return (args,)


def _check_percent(text: str, args: Any) -> None:
    """``text % args``: no width or precision (written, or given by ``*``) past the limit."""
    star = False
    for match in _PERCENT_SPEC.finditer(text):
        for part in match.groups():
            if part == "*":
                star = True
            elif part:
                _check_int(int(part), "a %-format width")
    if star:
        for value in _values(args):
            _check_int(value, "a %-format width")


def _check_format(text: str, args: Iterable[Any]) -> None:
    """``text.format(...)``: no field width in the format past the limit."""
    nested = False
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError:
        return  # str.format raises the real error
    for _, _, spec, _ in fields:
        if not spec:
            continue
        nested = nested or "{" in spec
        for digits in _DIGITS.findall(spec):
            _check_int(int(digits), "a format width")
    if nested:
        for value in args:
            _check_int(value, "a format width")


def _check_join(separator: str, items: list[Any]) -> None:
    total = len(separator) * max(0, len(items) - 1)
    limit = budget().max_chars
    for item in items:
        total += len(item) if isinstance(item, str) else len(str(item))
        if total > limit:
            break
    budget().need(total, "joining these values")


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if not isinstance(text, str) or not isinstance(old, str) or not isinstance(new, str):
        return
    hits = text.count(old) if old else len(text) + 1
    limit = _whole(count)
    if limit is not None and limit >= 0:
        hits = min(hits, limit)
    budget().need(len(text) + hits * max(0, len(new) - len(old)), "this replace")


def _check_str_method(
    owner: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, ...]:
    """Checks for ``str`` methods that can make more than they are given; may return new
    arguments (``join`` reads a generator once, to size it)."""
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _check_int(args[0], f"{name}()")
    elif name == "expandtabs":
        size = _whole(args[0] if args else kwargs.get("tabsize", 8)) or 0
        budget().need(len(owner) + owner.count("\t") * max(0, size), "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1)
    elif name == "join" and args:
        items = list(args[0])
        _check_join(owner, items)
        return (items, *args[1:])
    elif name == "format":
        _check_format(owner, (*args, *kwargs.values()))
    elif name == "format_map" and args:
        _check_format(owner, _values(args[0]))
    return args


def _json_default(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else str(value)


_JSON_DEPTH_CHARS = 2  # each JSON line of tojson(indent=N) holds at least 2 characters


def _check_filter(name: str, arguments: Mapping[str, Any]) -> dict[str, Any] | None:
    """Checks for filters that can make more than they are given; may return new
    arguments (``join`` and ``sum`` read a generator once, to size it)."""
    get = arguments.get
    if name == "center":
        _check_int(get("width", 80), "center")
    elif name == "indent":
        text, width = str(get("s", "")), get("width", 4)
        per_line = len(width) if isinstance(width, str) else (_whole(width) or 0)
        budget().need(len(text) + per_line * (text.count("\n") + 1), "indent")
    elif name == "wordwrap":
        text, width = str(get("s", "")), max(1, _whole(get("width", 79)) or 1)
        wrap = get("wrapstring") or "\n"
        budget().need(len(text) + (len(text) // width + 1) * len(str(wrap)), "wordwrap")
    elif name == "batch":
        _check_int(get("linecount"), "batch")
    elif name == "slice":
        _check_int(get("slices"), "slice")
    elif name == "tojson" and get("indent"):
        indent = _whole(get("indent")) or 0
        compact = len(json.dumps(get("value"), default=_json_default))
        budget().need(compact + compact // _JSON_DEPTH_CHARS * indent, "tojson(indent=...)")
    elif name == "replace":
        _check_replace(get("s"), get("old"), get("new"), get("count", -1))
    elif name == "format":
        value = get("value")
        if isinstance(value, str):
            _check_percent(value, get("kwargs") or get("args", ()))
    elif name == "join":
        items = list(get("value") or ())
        separator = str(get("d", ""))
        if get("attribute") is None:
            _check_join(separator, items)
        else:  # the attributes joined are data already held; the separators are not
            budget().need(len(separator) * max(0, len(items) - 1), "joining these values")
        return {**arguments, "value": items}
    elif name == "sum":
        start = get("start", 0)
        if _size(start):
            items = list(get("iterable") or ())
            budget().need(_size(start) + sum(_size(i) for i in items), "sum")
            return {**arguments, "iterable": items}
    return None


_PASSED = frozenset({"context", "eval_ctx", "environment"})
_SIZED_FILTERS = frozenset(
    {"center", "indent", "wordwrap", "batch", "slice", "tojson", "replace", "format", "join"}
    | {"sum"}
)


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with the checks above before it runs and its result counted after."""
    signature = inspect.signature(function) if name in _SIZED_FILTERS else None
    # Jinja passes a context, eval context or environment first when the filter is marked
    # for one; a filter it wraps for async support is marked but does not declare it.
    first = next(iter(signature.parameters), "") if signature is not None else ""
    skip = 1 if getattr(function, "jinja_pass_arg", None) and first not in _PASSED else 0

    @wraps(function)  # keeps Jinja's pass_context / pass_environment marker
    def filtered(*args: Any, **kwargs: Any) -> Any:
        if signature is not None:
            try:
                bound = signature.bind(*args[skip:], **kwargs)
            except TypeError:
                return function(*args, **kwargs)  # let the filter raise its own error
            changed = _check_filter(name, bound.arguments)
            if changed is not None:
                bound.arguments.update(changed)
                args, kwargs = (*args[:skip], *bound.args), bound.kwargs
        return budget().counted(function(*args, **kwargs), f"the {name} filter")

    return filtered


def _escaping(finalize: Callable[[Any], Any]) -> Callable[..., Any]:
    """``finalize``, then the render's ``escape``; run at render time (never folded into
    a compiled constant), because the same template may render with or without one."""

    @pass_eval_context
    def final(eval_ctx: EvalContext, value: Any) -> Any:
        value = finalize(value)
        escape = budget().escape
        return value if escape is None else escape(str(value))

    return final


def _urlencode(function: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's ``urlencode``, except where the render encodes every value itself."""

    @wraps(function)
    def urlencode(value: Any) -> Any:
        return value if budget().escape is not None else function(value)

    return urlencode


class _SizedBuffer(list[Any]):
    """Where a block's output is collected: counts characters as they come in."""

    __slots__ = ("_chars",)

    def __init__(self) -> None:
        super().__init__()
        self._chars = 0

    def append(self, item: Any) -> None:
        self._grow(len(str(item)))
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        items = tuple(items)
        self._grow(sum(len(str(i)) for i in items))
        super().extend(items)

    def _grow(self, size: int) -> None:
        self._chars += size
        limits = budget()
        limits.need(self._chars, "text captured by a block")
        limits.take(size, "text captured by a block")


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with block buffers that count and ``~`` joins counted."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.sized_buffer()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.counted(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with every growth checked against the current ``RenderBudget``."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *, finalize: Callable[[Any], Any], **options: Any) -> None:
        super().__init__(finalize=_escaping(finalize), **options)
        self.globals.pop("lipsum", None)
        self.filters["urlencode"] = _urlencode(self.filters["urlencode"])

    def bound_filters(self) -> None:
        """Wrap every filter registered so far (call once, after adding aoe's own)."""
        for name, function in list(self.filters.items()):
            self.filters[name] = _bounded_filter(name, function)

    def sized_buffer(self) -> list[Any]:
        """A block's output buffer (called from compiled templates)."""
        return _SizedBuffer()

    def counted(self, value: Any) -> Any:
        """``value`` counted against the render's budget (called from compiled templates)."""
        return budget().counted(value, "joining with ~")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            budget().need(_size(left) + _size(right), "adding these values")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        result = super().call_binop(context, operator, left, right)
        return budget().counted(result, f"'{operator}'")

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        target = getattr(obj, "__wrapped__", obj)  # str.format arrives wrapped by Jinja
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            args = _check_str_method(owner, getattr(target, "__name__", ""), args, kwargs)
        return budget().counted(super().call(context, obj, *args, **kwargs), "a call")


def least_size(tree: nodes.Template) -> tuple[int, int]:
    """What a parsed template renders to at the least, from what it says outright (its
    text, constant repetition, ``center`` widths, loops over a constant ``range``), and
    the line of its largest such part. Anything that depends on data counts as nothing."""
    return _least(tree.body)


def _least(body: Iterable[nodes.Node]) -> tuple[int, int]:
    total, line, largest = 0, 1, -1
    for node in body:
        size, at = _least_node(node)
        total += size
        if size > largest:
            largest, line = size, at
    return total, line


def _least_node(node: nodes.Node) -> tuple[int, int]:
    if isinstance(node, nodes.Output):
        return _least(node.nodes)
    if isinstance(node, nodes.TemplateData):
        return len(node.data), node.lineno
    if isinstance(node, nodes.For) and isinstance(node.iter, nodes.Expr):
        count = _constant_range(node.iter)
        size, _ = _least(node.body)
        return (size * count if count else 0), node.lineno
    if isinstance(node, nodes.Scope | nodes.FilterBlock | nodes.With):
        return _least(node.body)
    if isinstance(node, nodes.Expr):
        return _least_expr(node), node.lineno
    return 0, node.lineno


def _least_expr(node: nodes.Expr) -> int:
    if isinstance(node, nodes.Const):
        return 0 if node.value is None else len(str(node.value))
    if isinstance(node, nodes.Concat):
        return sum(_least_expr(n) for n in node.nodes)
    if isinstance(node, nodes.Add):
        return _least_expr(node.left) + _least_expr(node.right)
    if isinstance(node, nodes.Mul):
        for seq, times in ((node.left, node.right), (node.right, node.left)):
            count = _whole(times.value) if isinstance(times, nodes.Const) else None
            if count is not None:
                return _least_expr(seq) * max(0, count)
        return 0
    if isinstance(node, nodes.Filter) and node.name == "center" and node.node is not None:
        width = node.args[0] if node.args else None
        wide = width.value if isinstance(width, nodes.Const) else None
        return max(_least_expr(node.node), _whole(wide) or 0)
    return 0


def _constant_range(node: nodes.Expr) -> int:
    """How many items ``range(...)`` with constant arguments gives (0 if not that)."""
    if not (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "range"
        and node.args
        and all(isinstance(a, nodes.Const) and _whole(a.value) is not None for a in node.args)
        and not node.kwargs
    ):
        return 0
    values = [int(a.value) for a in node.args if isinstance(a, nodes.Const)]
    try:
        return len(range(*values))
    except (TypeError, ValueError, OverflowError):
        return 0
