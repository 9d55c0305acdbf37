"""Where a storage URL puts the account: in the host (Azure) or in the path (emulators).

Azure names the account in the host, ``https://{account}.blob.core.windows.net/{container}``,
and so does a custom domain mapped to an account. Azurite serves the path style,
``http://127.0.0.1:10000/{account}/{container}``, on an IP address, ``localhost``, a container
host without dots (``http://azurite:10000``) or Docker's ``host.docker.internal``, and also the
host style ``http://{account}.blob.localhost:10000/{container}`` (Azurite's "production-style
URL"). The client and the indexer's event checks both read URLs by this one rule.
"""

from __future__ import annotations

import functools
import ipaddress

#: The services whose Azurite host-style names are ``{account}.{service}.localhost``.
_SERVICES = frozenset({"blob", "dfs", "queue", "table"})
_DOCKER_HOST = "host.docker.internal"


@functools.lru_cache(maxsize=256)  # a few hosts: an IP address is parsed once, not per event
def is_path_style(host: str) -> bool:
    """Whether a URL on ``host`` (no port, no brackets) names the account in its first path segment."""
    host = host.lower().rstrip(".")
    if "." not in host or host == _DOCKER_HOST:
        return True
    if host.endswith(".localhost"):
        labels = host.split(".")
        return not (len(labels) == 3 and labels[0] and labels[1] in _SERVICES)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
