"""Who may use `chatllm serve`, and how a request must be framed: the checks
every request passes before it is handled, with or without an API key.

* **Host.** With DNS rebinding, a web page's own name (attacker.example) is
  made to resolve to 127.0.0.1, and the page can then call a server on this
  machine and read its answers. The browser still sends `Host:
  attacker.example`, so a request must name the server as localhost (or a
  `*.localhost` name), by an IP address it listens on, or by a name in
  `--allowed-hosts`. A server listening on every interface (0.0.0.0, ::)
  accepts any IP address: a browser sends one in `Host` only when the page
  itself was loaded from that address, which no rebinding can arrange.
* **Origin.** A browser names the page that makes a request in `Origin`; such
  a request is refused unless the origin is in `--allowed-origins` (ollama's
  OLLAMA_ORIGINS) or is the server's own loopback address and port. Allowed
  origins get CORS headers, so a page of theirs can read the answers.
* **Content-Type.** A POST must be `application/json`. A page can send a
  text/plain POST to any server without asking; application/json needs a
  CORS preflight, which an origin that is not allowed does not pass.
* **Framing.** One Content-Length, no Transfer-Encoding beside it: a request
  whose length two parties could read differently is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from chatllm.server.requests import RequestError


@dataclass(frozen=True)
class Access:
    """Who may use the server besides clients on this machine: host names and
    browser origins, as patterns (`*.lan`, `http://localhost:*`; `*` allows any).
    `listen_host` is the address the server listens on."""

    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    listen_host: str = "127.0.0.1"

    @classmethod
    def from_options(cls, hosts: Iterable[str] | None, origins: Iterable[str] | None, listen_host: str) -> Access:
        """From `--allowed-hosts` and `--allowed-origins` values, each possibly a
        comma-separated list."""
        return cls(_patterns(hosts), _patterns(origins), listen_host.strip("[]").lower())

    def listens_on_address(self) -> bool:
        """Whether the server listens on an IP address (not a name, which is allowed itself)."""
        try:
            ipaddress.ip_address(self.listen_host)
            return True
        except ValueError:
            return False


def _patterns(values: Iterable[str] | None) -> tuple[str, ...]:
    found = (part.strip().lower().rstrip("/") for value in values or () for part in value.split(","))
    return tuple(dict.fromkeys(part for part in found if part))


def _matches(value: str, allowed: tuple[str, ...]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in allowed)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """The name or address in a Host header, without its port."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def check_host(access: Access, values: list[str] | None) -> None:
    """Raise 403 unless the Host header names this server as a user would."""
    if not values:
        return  # only an HTTP/1.0 client omits Host, and no browser is one
    if len(values) > 1:
        raise RequestError(400, "the request has more than one Host header")
    host = _host_name(values[0])
    if not host or is_loopback(host) or _matches(host, access.allowed_hosts) or host == access.listen_host:
        return
    try:
        address = ipaddress.ip_address(host)
        listening = ipaddress.ip_address(access.listen_host)
        if listening.is_unspecified or address == listening:
            return
    except ValueError:
        pass
    raise RequestError(
        403,
        f"this server is not reachable as '{host}': start it with --allowed-hosts {host} to allow that name",
        kind="permission_error",
        code="host_not_allowed",
    )


def check_origin(access: Access, origin: str | None, port: int) -> str | None:
    """The Origin the answer's CORS headers name (None without one); 403 for
    an origin that is not allowed."""
    if origin is None:
        return None
    normal = origin.strip().lower().rstrip("/")
    if _matches(normal, access.allowed_origins) or _own_origin(normal, port):
        return origin.strip()
    raise RequestError(
        403,
        f"requests from web pages at {origin.strip()!r} are refused: start the server with "
        f"--allowed-origins {normal} to allow that page",
        kind="permission_error",
        code="origin_not_allowed",
    )


def _own_origin(origin: str, port: int) -> bool:
    try:
        parts = urlsplit(origin)
        return parts.scheme == "http" and is_loopback(parts.hostname or "") and (parts.port or 80) == port
    except ValueError:  # an origin that is no URL
        return False


def check_content_type(value: str | None) -> None:
    """Raise 415 unless a POST body is declared as JSON."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise RequestError(
            415,
            f"the request body must be sent as 'Content-Type: application/json', not {value or 'none'!r}",
            code="unsupported_media_type",
        )


def body_length(headers: Message, limit: int, required: bool) -> int:
    """The length of the body that follows, by strict framing; 0 for none
    (411 when the body is `required`)."""
    lengths = headers.get_all("Content-Length") or []
    if headers.get_all("Transfer-Encoding"):
        if lengths:
            raise RequestError(400, "the request has both Transfer-Encoding and Content-Length")
        raise RequestError(411, "the request needs a Content-Length header (chunked bodies are not accepted)")
    if not lengths:
        if required:
            raise RequestError(411, "the request needs a Content-Length header")
        return 0
    if len(lengths) > 1:
        raise RequestError(400, "the request has more than one Content-Length header")
    if not re.fullmatch(r"[0-9]{1,20}", lengths[0].strip()):
        raise RequestError(400, f"the Content-Length header is not a number: {lengths[0]!r}")
    length = int(lengths[0])
    if length > limit:
        raise RequestError(413, f"the request body is larger than {limit // (1024 * 1024)} MiB")
    return length
