"""Outbound HTTP for definitions (``http_json``, alert webhooks): only to hosts the operator allows.

A definition is text anyone with an API key may submit, so a URL in it must not reach weflow's own
machine or network (the local Prefect API, cloud metadata at 169.254.169.254, private services).
By default public (globally routable) addresses are allowed and loopback, link-local, private,
shared, unspecified, multicast and reserved ones are not; ``WEFLOW_OUTBOUND_ALLOW`` (networks such
as ``127.0.0.1/32`` and host names such as ``api.corp`` or ``*.corp``) widens that.

- ``check_url`` is the apply-time check: a literal forbidden address (in any spelling the C
  resolver accepts: ``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``) or ``localhost``.
- ``GuardedTransport`` is the run-time check: it resolves the host once, refuses if any address is
  forbidden and connects to the checked address (Host header and TLS SNI keep the name), so a DNS
  answer that changes between check and connect cannot redirect the request. Redirects are not
  followed and environment proxies are ignored (a proxy would resolve the name itself).
- Errors name the URL without credentials or query values and never carry the fetched body.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import socket
import ssl
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx

from weflow.config import settings
from weflow.errors import OutboundError, OutboundRefused

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # a source, not a download tool: bounds what one response may hold in memory
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
HINT = "an operator may allow it with WEFLOW_OUTBOUND_ALLOW"


def _embedded(ip: Address) -> Address:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4, Teredo), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip


def kind(ip: Address) -> str | None:
    """Why ``ip`` is not public (``loopback``, ``private``, ...), or None for a public address."""
    inner = _embedded(ip)
    for name, hit in (
        ("unspecified", inner.is_unspecified),
        ("loopback", inner.is_loopback),
        ("link-local", inner.is_link_local),
        ("multicast", inner.is_multicast),
        ("private", inner.is_private or (isinstance(inner, ipaddress.IPv6Address) and inner.is_site_local)),
        ("reserved", inner.is_reserved),
    ):
        if hit:
            return name
    return None if inner.is_global else "non-public"


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def literal(host: str) -> Address | None:
    """The address ``host`` spells, in any form the C resolver reads as a number, else None."""
    text = unquote(host).strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:  # inet_aton reads the legacy forms getaddrinfo accepts: 2130706433, 0x7f.1, 0177.0.0.1, 127.1
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def redact(url: str) -> str:
    """``url`` fit for a message: no user or password, query values replaced by ``...``."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    query = "&".join(f"{key}=..." for key, _ in parsed.params.multi_items())
    return str(parsed.copy_with(username=None, password=None, query=query.encode() or None, fragment=None))


@dataclass(frozen=True)
class Policy:
    """Where outbound requests may go: public addresses, plus the operator's networks and host names."""

    networks: tuple[Network, ...] = ()
    hosts: tuple[str, ...] = ()  # lower-case names; "*.corp" matches any name ending in ".corp"

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Policy:
        """Read allow-list entries: CIDR networks (or single addresses) and host names."""
        networks: list[Network] = []
        hosts: list[str] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            bare = name.removeprefix("*.")
            if not bare or not all(part.replace("-", "").replace("_", "").isalnum() for part in bare.split(".")):
                raise ValueError(f"WEFLOW_OUTBOUND_ALLOW: {entry!r} is neither a network (CIDR) nor a host name")
            hosts.append(name)
        return cls(tuple(networks), tuple(hosts))

    @classmethod
    def current(cls) -> Policy:
        return cls.parse(settings().outbound_allow)

    def allows_name(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return any(name == h or (h.startswith("*.") and name.endswith(h[1:])) for h in self.hosts)

    def refusal(self, ip: Address) -> str | None:
        """The kind of address ``ip`` is when it may not be reached (``loopback``...), else None."""
        if any(a in n for a in {ip, _embedded(ip)} for n in self.networks if a.version == n.version):
            return None
        return kind(ip)

    def check_url(self, url: str) -> str | None:
        """The apply-time check (no DNS): why ``url`` is refused, or None."""
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL as exc:
            return f"not a valid URL: {exc}"
        if not host:
            return "the URL names no host"
        if self.allows_name(host):
            return None
        name = unquote(host).lower().rstrip(".")
        if name in _LOCAL_NAMES or name.endswith(".localhost"):
            if self.refusal(ipaddress.IPv4Address("127.0.0.1")) is None:
                return None
            return f"host {host!r} is this machine (a loopback address): not allowed; {HINT}"
        address = literal(host)
        why = None if address is None else self.refusal(address)
        if why is None:
            return None
        spelled = "" if str(address) == unquote(host) else f" {address},"
        return f"host {host!r} is{spelled} {_a(why)} address: not allowed; {HINT}"

    def resolve(self, host: str, port: int) -> list[Address]:
        """Every address ``host`` resolves to, all checked; OutboundRefused if one is forbidden."""
        try:
            infos = socket.getaddrinfo(unquote(host), port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise OutboundError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if self.allows_name(host):
            return addresses
        for address in addresses:
            why = self.refusal(address)
            if why is not None:
                raise OutboundRefused(f"host {host!r} resolves to {address}, {_a(why)} address: not allowed; {HINT}")
        return addresses


@functools.cache
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=False)  # loading the CA bundle once per process, not per request


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that connects only to addresses the policy allows, as checked at connect time."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = httpx.HTTPTransport(verify=_tls(), trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = self.policy.resolve(url.host, port)
        extensions = {**request.extensions, "sni_hostname": url.host} if url.scheme == "https" else request.extensions
        error: httpx.ConnectError | None = None
        for address in addresses:
            pinned = httpx.Request(
                request.method, url.copy_with(host=str(address)), headers=request.headers,
                stream=request.stream, extensions=extensions,
            )  # fmt: skip
            try:
                return self.inner.handle_request(pinned)
            except httpx.ConnectError as exc:
                error = exc
        raise error or httpx.ConnectError(f"no address for {url.host!r}")

    def close(self) -> None:
        self.inner.close()


_shown_as: ContextVar[str | None] = ContextVar("weflow_outbound_shown_as", default=None)


class _RedactedURLs(logging.Filter):
    """httpx logs each request's URL at INFO ("HTTP Request: GET ..."): its query values (a secret's, perhaps)
    go, and a URL that is itself a secret shows as its reference (``post_json(..., shown=...)``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            shown = _shown_as.get()
            record.args = tuple((shown or redact(str(a))) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


@functools.cache
def _redacting_logs() -> None:
    logging.getLogger("httpx").addFilter(_RedactedURLs())  # once per process, when the first client is made


def client(timeout: float, policy: Policy | None = None) -> httpx.Client:
    """An httpx client for definition-supplied URLs: guarded, no redirects, no environment proxies."""
    _redacting_logs()
    transport = GuardedTransport(policy or Policy.current())
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


def _transport_problem(exc: httpx.HTTPError, timeout: float) -> str:
    # protocol errors may quote the bytes the server sent: only their type is shown
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})"
    return type(exc).__name__


def _status(response: httpx.Response) -> str:
    redirect = " (redirects are not followed)" if response.is_redirect else ""
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip() + redirect


def _read(response: httpx.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise OutboundError(f"the response is over {MAX_RESPONSE_BYTES // 2**20} MB")
    return bytes(body)


def get_json(
    url: str,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    policy: Policy | None = None,
    headers: Mapping[str, Any] | None = None,
) -> Any:
    """GET ``url`` and parse its JSON; OutboundError names the URL, the status and the problem, never the body
    (nor a header)."""
    where = redact(url)
    query, sent = dict(params or {}), dict(headers or {})
    try:
        with client(timeout, policy) as http, http.stream("GET", url, params=query, headers=sent) as response:
            body = _read(response) if response.is_success else None
    except OutboundError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except httpx.HTTPError as exc:
        raise OutboundError(f"{where}: {_transport_problem(exc, timeout)}") from None
    if body is None:
        raise OutboundError(f"{where}: {_status(response)}")
    try:
        return json.loads(body)
    except ValueError:
        kind_of = response.headers.get("content-type", "no content type")
        raise OutboundError(f"{where}: HTTP {response.status_code} but the body is not JSON ({kind_of})") from None


def post_json(
    url: str, payload: Any, timeout: float = 10.0, policy: Policy | None = None, shown: str | None = None
) -> int:
    """POST ``payload`` as JSON and return the status code; OutboundError (never the body) if no answer came.

    ``shown``: what messages and logs call the URL instead of it (``{secret: NAME}`` when a secret holds it).
    """
    where = shown or redact(url)
    token = _shown_as.set(shown)
    try:
        with client(timeout, policy) as http:
            return http.post(url, json=payload).status_code
    except OutboundError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except httpx.HTTPError as exc:
        raise OutboundError(f"{where}: {_transport_problem(exc, timeout)}") from None
    finally:
        _shown_as.reset(token)
