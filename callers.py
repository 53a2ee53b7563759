"""Who called: the name of the function key an HTTP request came with, for the lifecycle record
(who published or revoked).

Neither engine tells a Python function the key's name. The Functions host authenticates the key
and puts its name in the request principal's ``keyid`` claim, but the Python worker does not pass
the principal on (its ``RpcHttp`` conversion keeps method, URL, headers, query, route parameters
and body; ``identities`` are dropped), and the embedded runtime hands a function what the worker
would. What a function does see is the key itself (``x-functions-key``, else ``?code=``, the order
in which the host reads them), already checked by the host. So the caller is recorded as the key's
*fingerprint* (the first 16 hex digits of its SHA-256: it names one key and reveals nothing of
it), or as the name the operator gave that fingerprint in ``RMH_KEY_NAMES``; without a key (an
anonymous route, the open local host) as ``anonymous``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

ANONYMOUS = "anonymous"


def fingerprint(key: str) -> str:
    """The first 16 hex digits of the key's SHA-256 (``printf %s "$KEY" | sha256sum | cut -c1-16``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def presented_key(headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    """The key a request came with: ``x-functions-key``, else ``?code=``."""
    return headers.get("x-functions-key") or params.get("code") or None


def caller(headers: Mapping[str, str], params: Mapping[str, str], names: Mapping[str, str]) -> str:
    """The key's name from ``names`` (fingerprint → name), else ``key <fingerprint>``, else
    ``anonymous``."""
    key = presented_key(headers, params)
    if not key:
        return ANONYMOUS
    print_ = fingerprint(key)
    return names.get(print_) or f"key {print_}"
