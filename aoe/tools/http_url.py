"""Where an ``http:`` tool's request may go, and the URL a call's arguments build.

A model's arguments are written by whoever wrote the documents it read, so they never
choose where a request goes:

- **The origin is the spec's.** Scheme, host and port are the literal text of the ``url``
  template before its path. The arguments are rendered only into what follows, each
  value percent-encoded whole (``/ ? # @ % \\`` included), so a value fills one path
  segment or one query value and nothing else; ``| urlencode`` is accepted and changes
  nothing more. A path segment that is ``.`` or ``..``, also once decoded (``%2e%2e``,
  ``..%2f``, ``..\\``), is refused, and the path must stay under the template's literal
  prefix (the text up to the last ``/`` before the first ``{{``).
- **Or the host is data, from a list.** A template whose host or port is templated
  needs ``allowed_hosts``: each entry a host name (``erp.example.com``, or
  ``*.example.com`` for its subdomains), an IP address or a CIDR network, with ``:port``
  for a port other than the scheme's default (``127.0.0.1:8080``, ``[::1]:8080``). A
  value can still only be a plain name (``:``, ``@`` and brackets are encoded). A named
  host is resolved, and every address must be public (not private, loopback,
  link-local, shared, reserved or multicast) unless an IP or CIDR entry covers it; the
  request then goes to the address that was checked, so a second lookup cannot send it
  elsewhere. Such a tool cannot have ``env:`` headers: a credential has one origin.

``UrlPlan.of`` reads a tool's ``url`` and ``allowed_hosts`` once (a ``ValueError`` is a
mistake in the spec, reported by ``aoe validate``); ``UrlPlan.build`` makes one call's URL
and ``Destination.resolve`` says where to connect, or raises ``Refused``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

import httpx

__all__ = ["Destination", "Origin", "Refused", "UrlPlan", "encode_value"]

DEFAULT_PORTS = {"http": 80, "https": 443}
_TAG_OPEN = re.compile(r"\{[{%#]")
_TAG_CLOSE = {"{{": "}}", "{%": "%}", "{#": "#}"}
_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_DECODE_ROUNDS = 3  # %252e%252e is '..' after three decodings; a server may decode twice

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """A call's URL would leave what the tool declares; the message says what and why."""


def encode_value(text: str) -> str:
    """One templated value in a URL: everything but unreserved characters encoded."""
    return quote(text, safe="")


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme, host and port: where a request goes."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx.URL) -> Origin:
        return cls(url.scheme, _host(url), url.port or DEFAULT_PORTS.get(url.scheme, 0))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _host(url: httpx.URL) -> str:
    return url.host.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class HostRule:
    """One ``allowed_hosts`` entry: a name (``suffix``: its subdomains), or a network."""

    text: str
    name: str | None = None
    suffix: bool = False
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> HostRule:
        entry = text.strip().lower()
        host, port = _split_port(entry, text)
        try:
            return cls(text, network=ipaddress.ip_network(host, strict=False), port=port)
        except ValueError:
            pass
        if not _NAME.fullmatch(host.rstrip(".")):
            raise ValueError(
                f"allowed_hosts entry {text!r} is not a host name, IP address or network "
                "(with an optional :port)"
            )
        if host.startswith("*."):
            return cls(text, name=host[2:].rstrip("."), suffix=True, port=port)
        return cls(text, name=host.rstrip("."), port=port)

    def _port_ok(self, origin: Origin) -> bool:
        wanted = self.port if self.port is not None else DEFAULT_PORTS.get(origin.scheme)
        return origin.port == wanted

    def names(self, origin: Origin) -> bool:
        """Whether this entry allows the named host and port of ``origin``."""
        if self.name is None or not self._port_ok(origin):
            return False
        if self.suffix:
            return origin.host.endswith("." + self.name)
        return origin.host == self.name

    def covers(self, address: IPAddress, origin: Origin) -> bool:
        """Whether this entry allows connecting to ``address`` on ``origin``'s port."""
        return (
            self.network is not None
            and address.version == self.network.version
            and address in self.network
            and self._port_ok(origin)
        )


def _split_port(entry: str, text: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port``, a bare IPv6 address or network, or a bare host."""
    if entry.startswith("["):
        host, _, after = entry[1:].partition("]")
        if after and not after.startswith(":"):
            raise ValueError(f"allowed_hosts entry {text!r} is not [address]:port")
        return host, _port(after[1:], text) if after else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, _port(port, text)
    return entry, None


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"allowed_hosts entry {entry!r} has no valid port")
    return int(text)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one request goes: its URL, and for a listed host the address to connect to."""

    url: httpx.URL
    rules: tuple[HostRule, ...] = ()

    @property
    def origin(self) -> Origin:
        return Origin.of(self.url)

    async def resolve(self) -> tuple[httpx.URL, ...]:
        """The URLs to connect to, in turn until one connects: the spec's origin as is, or
        a listed host's checked addresses.

        Raises ``Refused`` for a host, port or address the list does not allow.
        """
        if not self.rules:
            return (self.url,)
        origin = self.origin
        try:
            literal: IPAddress | None = ipaddress.ip_address(origin.host)
        except ValueError:
            literal = None
        if literal is not None:
            if not any(r.covers(_plain(literal), origin) for r in self.rules):
                raise Refused(f"{origin} is not in the tool's allowed_hosts")
            return (self.url,)
        if not any(r.names(origin) for r in self.rules):
            raise Refused(f"{origin} is not in the tool's allowed_hosts")
        addresses = await _lookup(origin)
        for address in addresses:
            if not (address.is_global or any(r.covers(address, origin) for r in self.rules)):
                raise Refused(
                    f"{origin.host} resolves to {address}, a {_kind(address)} address, "
                    "which allowed_hosts does not list"
                )
        return tuple(self.url.copy_with(host=str(a)) for a in dict.fromkeys(addresses))


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _kind(address: IPAddress) -> str:
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


async def _lookup(origin: Origin) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {origin.host}: {exc.strerror or exc}") from None
    addresses = [_plain(ipaddress.ip_address(info[4][0])) for info in found]
    if not addresses:
        raise Refused(f"{origin.host} has no address")
    return addresses


@dataclass(frozen=True, slots=True)
class UrlPlan:
    """A tool's ``url`` template, split where arguments may and may not go."""

    source: str
    scheme: str
    authority: str  # literal (fixed origin), or a template (a host from allowed_hosts)
    rest: str  # the template of the path, query and fragment
    prefix: str  # the literal path every request stays under
    origin: Origin | None  # the fixed origin; None when the host is data
    rules: tuple[HostRule, ...] = ()

    @classmethod
    def of(cls, source: str, allowed_hosts: Sequence[str] | None = None) -> UrlPlan:
        """Read a tool's ``url`` and ``allowed_hosts``; ``ValueError`` names the mistake."""
        scheme, authority, rest = _split(source)
        rules = tuple(HostRule.parse(str(h)) for h in allowed_hosts or ())
        prefix = _literal_prefix(rest)
        if _TAG_OPEN.search(authority) is None:
            fixed = _fixed_origin(source, scheme, authority)
            if fixed.userinfo:
                raise ValueError(
                    "url must not carry a user name or password; send credentials in a "
                    "header from env:"
                )
            return cls(source, scheme, authority, rest, prefix, Origin.of(fixed), rules)
        if not rules:
            raise ValueError(
                "url takes its host or port from the arguments, so the tool needs "
                "allowed_hosts: the hosts it may call"
            )
        return cls(source, scheme, authority, rest, prefix, None, rules)

    def build(self, render: Callable[[str], str]) -> Destination:
        """The URL of one call; ``render`` renders a template with each value encoded.

        Raises ``Refused`` when the path would leave the tool's prefix or the origin its
        declaration.
        """
        if self.origin is not None:
            authority, rest = self.authority, render(self.rest)
        else:
            authority, rest = _split_rendered(render(self.authority + self.rest))
        _check_segments(rest)
        try:
            url = httpx.URL(f"{self.scheme}://{authority}{rest}")
        except httpx.InvalidURL as exc:
            raise Refused(f"the arguments do not make a valid URL ({exc})") from None
        path = url.raw_path.split(b"?", 1)[0].decode("ascii")
        if not path.startswith(self.prefix):
            raise Refused(f"the path {path} leaves the tool's prefix {self.prefix}")
        if self.origin is not None and Origin.of(url) != self.origin:
            raise Refused(f"the request would go to {Origin.of(url)}, not {self.origin}")
        if self.origin is None and url.userinfo:
            raise Refused("the URL may not carry a user name or password")
        return Destination(url, self.rules)


def _fixed_origin(source: str, scheme: str, authority: str) -> httpx.URL:
    """The URL of a literal authority, or ``ValueError`` naming what is wrong with it."""
    try:
        url = httpx.URL(f"{scheme}://{authority}/")
    except httpx.InvalidURL as exc:
        raise ValueError(f"url {source!r} is not a valid URL ({exc})") from None
    if not url.host or "%" in url.host:
        raise ValueError(f"url {source!r} names no valid host")
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError(f"url {source!r} has no valid port")
    return url


def _split(source: str) -> tuple[str, str, str]:
    """``scheme``, the authority, and the rest of a URL template; tags are skipped over,
    so only a ``/``, ``?`` or ``#`` written outside ``{{ }}`` ends the authority."""
    match = re.match(r"(https?)://", source)
    if match is None:
        raise ValueError(f"url {source!r} must start with http:// or https://")
    position = match.end()
    while position < len(source):
        char = source[position]
        opener = source[position : position + 2]
        if opener in _TAG_CLOSE:
            end = source.find(_TAG_CLOSE[opener], position + 2)
            if end < 0:
                raise ValueError(f"url {source!r} has an unclosed {opener}")
            position = end + 2
            continue
        if char in "/?#":
            break
        position += 1
    return match.group(1), source[match.end() : position], source[position:]


def _literal_prefix(rest: str) -> str:
    """The path a template's requests stay under: up to the last ``/`` before any tag."""
    tag = _TAG_OPEN.search(rest)
    literal = rest if tag is None else rest[: tag.start()]
    literal = re.split(r"[?#]", literal, maxsplit=1)[0]
    return literal[: literal.rfind("/") + 1] if "/" in literal else "/"


def _split_rendered(text: str) -> tuple[str, str]:
    """Authority and rest of a rendered URL after its ``scheme://``."""
    cut = min((i for i in (text.find(c) for c in "/?#") if i >= 0), default=len(text))
    return text[:cut], text[cut:]


def _check_segments(rest: str) -> None:
    """Refuse ``.`` and ``..`` path segments, as written or once a server decodes them."""
    path = re.split(r"[?#]", rest, maxsplit=1)[0]
    for segment in path.split("/"):
        for text in _decodings(segment):
            if any(part in (".", "..") for part in re.split(r"[/\\]", text)):
                raise Refused(f"the path segment {segment!r} would climb out of the tool's path")


def _decodings(segment: str) -> Iterable[str]:
    text = segment
    yield text
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(text)
        if decoded == text:
            return
        text = decoded
        yield text
