"""Who the client is: its address, also behind the configured proxy (``TRUSTED_PROXIES``)."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from .keys import settings_key


def client_address(request: web.Request) -> str:
    """``request.remote``; when that is a trusted proxy, the address the proxy saw (the last entry of its
    ``X-Forwarded-For``). From anyone else the header is ignored: a client cannot pick its own address."""
    remote = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and _trusted(remote, request.config_dict[settings_key].trusted_proxies):
        return forwarded.rsplit(",", 1)[-1].strip()
    return remote


def _trusted(remote: str, proxies: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(proxy, strict=False) for proxy in proxies)
