"""Which proxy, if any, the environment asks for to reach an upstream.

``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY`` (any case) are read once, when a backend's
connection pool is built, never per request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit


def proxy_for(url: str, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy the environment asks for to reach ``url``, honouring ``NO_PROXY``."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    lowered = {k.lower(): v for k, v in env.items() if k.lower().endswith("_proxy") and v}
    no_proxy = lowered.get("no_proxy", "")
    if _bypassed(parts.hostname or "", no_proxy):
        return None
    return lowered.get(f"{parts.scheme}_proxy") or lowered.get("all_proxy")


def _bypassed(host: str, no_proxy: str) -> bool:
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False
