"""Where the platform may send requests: a URL that a user registers (webhooks today, payment apps
later) must lead outside, never to the deployment's own network.

The rule: `https` outside development and test; the host must not be a deployment service name
(db, redis, api, ...), nor resolve to a loopback, private, link-local, unique-local, multicast or
otherwise non-global address. Registration checks what resolves now (a name that does not resolve
yet is accepted and checked again at each send); every send resolves again and connects to the
address it checked, so a name re-pointed at the inside after registration gains nothing. The one
exception, honoured in development and test only, is O2O_OUTBOUND_ALLOWED_HOSTS (for example the
development payment app's local URL).
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from o2o.config import get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The compose services and the names every resolver keeps for this machine.
SERVICE_NAMES = frozenset({"db", "redis", "api", "worker", "beat", "migrate", "localhost"})
SERVICE_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")


class UnsafeURL(ValueError):
    """The URL leads inside (or in clear text where that is refused)."""


@dataclass(frozen=True)
class Target:
    """A checked destination: where to connect, and under which name (Host and TLS)."""

    url: str
    host: str
    address: str | None  # None: allow-listed, connect by name


def _allowed_hosts() -> set[str]:
    settings = get_settings()
    if settings.env not in ("development", "test"):
        return set()
    return {h.strip().lower() for h in settings.outbound_allowed_hosts.split(",") if h.strip()}


def _is_outside(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _parse(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise UnsafeURL("Only http(s) URLs with a host are accepted.")
    if parts.username or parts.password:
        raise UnsafeURL("The URL must not carry credentials.")
    if parts.scheme != "https" and get_settings().env not in ("development", "test"):
        raise UnsafeURL("The URL must use https.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("The URL's port is not a number from 1 to 65535.") from None
    return parts.scheme, host, port


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def _check_host(host: str) -> None:
    if (
        host in SERVICE_NAMES
        or host.endswith(SERVICE_SUFFIXES)
        or "." not in host
        and ":" not in host
    ):
        raise UnsafeURL(f"{host} is an internal name.")


def check_registration(url: str) -> None:
    """Refuse a URL that leads inside now; a name that does not resolve yet passes (for now)."""
    _, host, port = _parse(url)
    if host in _allowed_hosts():
        return
    _check_host(host)
    for address in _resolve(host, port):
        if not _is_outside(address):
            raise UnsafeURL(f"{host} leads to an internal address.")


def resolve_for_send(url: str) -> Target:
    """Resolve and check the URL now; return the address to connect to (raise UnsafeURL)."""
    _, host, port = _parse(url)
    if host in _allowed_hosts():
        return Target(url=url, host=host, address=None)
    _check_host(host)
    addresses = _resolve(host, port)
    if not addresses:
        raise UnsafeURL(f"{host} does not resolve.")
    for address in addresses:
        if not _is_outside(address):
            raise UnsafeURL(f"{host} leads to an internal address.")
    return Target(url=url, host=host, address=str(addresses[0]))


def pinned_request_args(target: Target) -> tuple[str, dict[str, str], dict[str, str]]:
    """Return (url, extra headers, httpx extensions) that connect to the checked address while
    presenting the original name (Host header, TLS SNI and certificate check)."""
    if target.address is None:
        return target.url, {}, {}
    parts = urlsplit(target.url)
    literal = f"[{target.address}]" if ":" in target.address else target.address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    pinned = parts._replace(netloc=netloc).geturl()
    host_header = target.host + (f":{parts.port}" if parts.port else "")
    return pinned, {"Host": host_header}, {"sni_hostname": target.host}
