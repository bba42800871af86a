"""Which address a webhook came from, and whether the tenant lets it in. Pure.

In Azure App Service (and Functions on it) the front end sets ``client-ip`` to the caller's
address and port, overwriting any such header the caller sent, so it cannot be spoofed — unlike
``X-Forwarded-For``, whose first entry is the caller's to write. The local host sets the same
header from the connection's peer address, so the rule is tested as it runs (docs/webhooks.md).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from shared.webhooks.rejected import WebhookRejected

CLIENT_IP_HEADER = "client-ip"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(headers: Mapping[str, str]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``client-ip`` as an address: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1`` or ``[::1]:5678``."""
    value = next((v for k, v in headers.items() if k.lower() == CLIENT_IP_HEADER), "").strip()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def check_allowed(networks: Sequence[Network], headers: Mapping[str, str]) -> None:
    """Nothing when the tenant has no allowlist or the caller is on it; else a 403 with its reason."""
    if not networks:
        return
    address = client_address(headers)
    if address is None:
        raise WebhookRejected(403, "client-ip-unknown")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not any(address.version == net.version and address in net for net in networks):
        raise WebhookRejected(403, "ip-not-allowed")
