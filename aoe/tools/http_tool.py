"""``http: {method, url, headers, body, timeout_s, max_bytes}``: one HTTP request per call.

The URL, header strings and the strings inside ``body`` are Jinja templates over the
call's arguments (``args``). A header may instead come from an environment variable,
``{env: ERP_TOKEN, prefix: "Bearer "}``: its value is read at call time and never logged,
recorded or shown (if the server echoes it, it is masked in the result). Without
``body``, POST, PUT and PATCH send the arguments as JSON. The response body is cut to
``max_bytes`` and the result says so; a status of 400 or more is an error result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from aoe.errors import TemplateRenderError
from aoe.spec.models import HttpSettings, ToolSpec, thaw
from aoe.spec.templates import render
from aoe.tools.base import ToolFailed, ToolOutput, decode_truncated

_MASK = "[secret]"


class HttpTool:
    """Runs one ``http:`` tool through a shared ``httpx.AsyncClient``."""

    def __init__(self, spec: ToolSpec, client: Callable[[], httpx.AsyncClient]) -> None:
        self.spec = spec
        self._client = client

    async def __call__(self, arguments: dict[str, Any]) -> ToolOutput:
        target = thaw(self.spec.target)
        context = {"args": arguments}
        settings = HttpSettings.of(target)
        method = settings.method
        url = self._render(str(target["url"]), context, "url")
        headers, secrets = self._headers(target.get("headers") or {}, context)
        body: Any = None
        if "body" in target:
            body = self._render_value(target["body"], context)
        elif method in ("POST", "PUT", "PATCH"):
            body = arguments
        limit = settings.max_bytes
        timeout_s = float(self.spec.timeout_s if settings.timeout_s is None else settings.timeout_s)
        content = body if isinstance(body, str) else None
        payload = None if isinstance(body, str) or body is None else body
        try:
            async with self._client().stream(
                method, url, headers=headers, content=content, json=payload, timeout=timeout_s
            ) as response:
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        break
        except httpx.TimeoutException:
            raise ToolFailed(f"{method} {url}: no answer within timeout_s={timeout_s}") from None
        except httpx.HTTPError as exc:
            raise ToolFailed(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None
        output = decode_truncated(bytes(data), limit)
        text = output.text
        for secret in secrets:
            text = text.replace(secret, _MASK)
        if response.status_code >= 400:
            raise ToolFailed(f"HTTP {response.status_code} from {method} {url}: {text}")
        return ToolOutput(text, output.truncated)

    def _render(self, source: str, context: Mapping[str, Any], part: str) -> str:

        try:
            return render(source, context, where=f"tool {self.spec.name} {part}")
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
                headers[name] = self._render(str(value), context, f"header {name}")
        return headers, secrets
