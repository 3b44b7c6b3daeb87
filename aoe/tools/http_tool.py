"""``http: {method, url, headers, body, timeout_s, max_bytes, allowed_hosts,
follow_redirects}``: one HTTP request per call, to where the spec says.

The URL, header strings and the strings inside ``body`` are Jinja templates over the
call's arguments (``args``). Where the request goes is the spec's, never the model's
(``aoe.tools.http_url``): the arguments fill path segments and query values, each one
encoded, and a host comes from them only if ``allowed_hosts`` lists it.

A header may come from an environment variable, ``{env: ERP_TOKEN, prefix: "Bearer "}``:
its value is read at call time, sent only to the tool's own origin, and never logged,
recorded or shown (if the server echoes it, it is masked in the result). Without
``body``, POST, PUT and PATCH send the arguments as JSON.

What comes back is bounded: ``timeout_s`` is the whole exchange's deadline (a server that
trickles bytes is cut off too), the body is read only up to ``max_bytes`` (decompressed
under the same bound) and the result says it was cut. A status of 400 or more is an
error result; so is a redirect, unless ``follow_redirects: true``, and then only within
the same origin (at most ``MAX_REDIRECTS``).
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from aoe.errors import TemplateRenderError
from aoe.spec.models import HttpSettings, ToolSpec, thaw
from aoe.spec.templates import render
from aoe.tools.base import ToolFailed, ToolOutput, decode_truncated
from aoe.tools.http_url import Destination, Origin, Refused, UrlPlan, encode_value

_MASK = "[secret]"
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    headers: dict[str, str]
    content: str | None
    payload: Any


class HttpTool:
    """Runs one ``http:`` tool through a shared ``httpx.AsyncClient``."""

    def __init__(self, spec: ToolSpec, client: Callable[[], httpx.AsyncClient]) -> None:
        self.spec = spec
        self._client = client
        self._target = thaw(spec.target)
        self._settings = HttpSettings.of(self._target)
        try:
            self._plan: UrlPlan | ValueError = UrlPlan.of(
                str(self._target["url"]), self._target.get("allowed_hosts")
            )
        except ValueError as exc:  # validate reports it; a library caller hears it per call
            self._plan = exc

    async def __call__(self, arguments: dict[str, Any]) -> ToolOutput:
        if isinstance(self._plan, ValueError):
            raise ToolFailed(f"the tool's url cannot be used: {self._plan}")
        plan, settings = self._plan, self._settings
        context = {"args": arguments}
        try:
            destination = plan.build(
                lambda source: self._render(source, context, "url", escape=encode_value)
            )
        except Refused as exc:
            raise ToolFailed(f"refused: {exc}") from None
        headers, secrets = self._headers(self._target.get("headers") or {}, context)
        if secrets and plan.origin is None:
            raise ToolFailed("refused: env: credentials go only to a fixed origin")
        body: Any = None
        if "body" in self._target:
            body = self._render_value(self._target["body"], context)
        elif settings.method in ("POST", "PUT", "PATCH"):
            body = arguments
        request = _Request(
            settings.method,
            headers,
            body if isinstance(body, str) else None,
            None if isinstance(body, str) or body is None else body,
        )
        timeout_s = float(self.spec.timeout_s if settings.timeout_s is None else settings.timeout_s)
        shown = f"{settings.method} {destination.url}"
        try:
            async with asyncio.timeout(timeout_s):
                status, data = await self._exchange(destination, request, timeout_s)
        except TimeoutError:
            raise ToolFailed(f"{shown}: no answer within timeout_s={timeout_s:g}") from None
        except httpx.TimeoutException:
            raise ToolFailed(f"{shown}: no answer within timeout_s={timeout_s:g}") from None
        except httpx.HTTPError as exc:
            raise ToolFailed(f"{shown} failed: {type(exc).__name__}: {exc}") from None
        output = decode_truncated(data, settings.max_bytes)
        text = output.text
        for secret in secrets:
            text = text.replace(secret, _MASK)
        if status >= 400:
            raise ToolFailed(f"HTTP {status} from {shown}: {text}")
        return ToolOutput(text, output.truncated)

    async def _exchange(
        self, destination: Destination, request: _Request, timeout_s: float
    ) -> tuple[int, bytes]:
        """Send, following same-origin redirects if allowed; the status and the body."""
        first = destination.origin
        for _ in range(MAX_REDIRECTS + 1):
            try:
                targets = await destination.resolve()
            except Refused as exc:
                raise ToolFailed(f"refused: {exc}") from None
            status, data, location = await self._send(destination, targets, request, timeout_s)
            if status not in _REDIRECTS:
                return status, data
            destination, request = self._redirected(destination, request, location, first)
            if request.method != "GET" and status == 303:
                request = _Request("GET", request.headers, None, None)
        raise ToolFailed(f"more than {MAX_REDIRECTS} redirects from {destination.url}")

    async def _send(
        self,
        destination: Destination,
        targets: tuple[httpx.URL, ...],
        request: _Request,
        timeout_s: float,
    ) -> tuple[int, bytes, str | None]:
        """One request, to the first of ``targets`` that connects: the status, the body
        (or a redirect's Location)."""
        for index, target in enumerate(targets):
            headers = dict(request.headers)
            extensions: dict[str, Any] = {}
            if target is not destination.url:  # a listed host, pinned to a checked address
                headers["Host"] = destination.url.netloc.decode("ascii")
                extensions["sni_hostname"] = destination.url.host
            try:
                async with self._client().stream(
                    request.method,
                    target,
                    headers=headers,
                    content=request.content,
                    json=request.payload,
                    timeout=timeout_s,
                    extensions=extensions,
                ) as response:
                    if response.status_code in _REDIRECTS:
                        return response.status_code, b"", response.headers.get("location")
                    body = await _read(response, self._settings.max_bytes)
                    return response.status_code, body, None
            except httpx.ConnectError:
                if index == len(targets) - 1:
                    raise
        raise AssertionError("unreachable: resolve() gives at least one target")

    def _redirected(
        self, destination: Destination, request: _Request, location: str | None, first: Origin
    ) -> tuple[Destination, _Request]:
        if not location:
            raise ToolFailed(f"{destination.url} redirected without a Location")
        try:
            url = destination.url.join(location)
        except httpx.InvalidURL:
            raise ToolFailed(f"{destination.url} redirected to an invalid URL") from None
        if not self._settings.follow_redirects:
            raise ToolFailed(
                f"{destination.url} redirected to {url}; the tool does not follow redirects "
                "(follow_redirects: true allows them within its own origin)"
            )
        if Origin.of(url) != first:
            raise ToolFailed(
                f"refused: {destination.url} redirected to another origin ({Origin.of(url)})"
            )
        return Destination(url, destination.rules), request

    def _render(
        self,
        source: str,
        context: Mapping[str, Any],
        part: str,
        escape: Callable[[str], str] | None = None,
    ) -> str:
        try:
            return render(source, context, where=f"tool {self.spec.name} {part}", escape=escape)
        except TemplateRenderError as exc:
            raise ToolFailed(f"cannot build the request's {part}: {exc.message}") from None

    def _render_value(self, value: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            return self._render(value, context, "body")
        if isinstance(value, dict):
            return {k: self._render_value(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render_value(v, context) for v in value]
        return value

    def _headers(
        self, raw: Mapping[str, Any], context: Mapping[str, Any]
    ) -> tuple[dict[str, str], list[str]]:
        headers: dict[str, str] = {}
        secrets: list[str] = []
        for name, value in raw.items():
            if isinstance(value, dict):
                variable = str(value["env"])
                secret = os.environ.get(variable)
                if not secret:
                    raise ToolFailed(
                        f"environment variable {variable} (for header {name}) is not set"
                    )
                secrets.append(secret)
                headers[name] = str(value.get("prefix", "")) + secret
            else:
                text = self._render(str(value), context, f"header {name}")
                if "\r" in text or "\n" in text:
                    raise ToolFailed(f"refused: header {name} would hold a line break")
                headers[name] = text
        if not any(n.lower() == "accept-encoding" for n in headers):
            headers["Accept-Encoding"] = "identity"  # bodies are counted as they arrive
        return headers, secrets


async def _read(response: httpx.Response, limit: int) -> bytes:
    """The body, read (and decompressed) only until it passes ``limit`` bytes."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity") and encoding not in _DECODERS:
        raise ToolFailed(f"the response is {encoding}-encoded, which aoe does not decode")
    decoder = None if encoding in ("", "identity") else zlib.decompressobj(_DECODERS[encoding])
    data = bytearray()
    async for chunk in response.aiter_raw():
        if decoder is None:
            data += chunk
        else:
            pending = chunk
            while pending and len(data) <= limit:
                try:
                    data += decoder.decompress(pending, limit + 1 - len(data))
                except zlib.error as exc:
                    raise ToolFailed(f"the response body does not decompress: {exc}") from None
                pending = decoder.unconsumed_tail
        if len(data) > limit:
            break
    return bytes(data)
